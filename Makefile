# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= default
SOURCE ?=
ARGS ?=
PYTEST_ARGS ?=
MODEL ?=
ALIAS ?= champion
HOST ?= 127.0.0.1
PORT ?= 5001
WORKERS ?= 1
FILE ?=
STORE := sqlite:///$(CURDIR)/mlruns/mlflow.db

.PHONY: run test test-slow bench ui serve-model predict clean-cache

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,pretrained,dask]'
	@touch $@

run: $(BIN)/.installed  ## the ESC-10 case study (SOURCE=folder|csv|zip|URL, PRESET=smoke|quick|default|book, ARGS="--option value ...")
	$(BIN)/soundflow run --preset $(PRESET) $(if $(SOURCE),--source "$(SOURCE)") $(ARGS)

test: $(BIN)/.installed  ## lint, the layer contract, types, then the default test run (under 10 minutes)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(BIN)/.installed  ## the long tests too
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

bench: $(BIN)/.installed
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

ui: $(BIN)/.installed  ## MLflow UI on the embedded store: http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --port 5000

# MLflow starts the scoring server by running `uvicorn` by name: the venv's bin goes first on PATH.
serve-model: $(BIN)/.installed  ## REST scoring server for models:/$(MODEL)@$(ALIAS) (default soundflow-esc10) on http://$(HOST):$(PORT)/invocations
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-$(STORE)}" \
		$(BIN)/mlflow models serve -m "models:/$(or $(MODEL),soundflow-esc10)@$(ALIAS)" \
		--env-manager local --host $(HOST) --port $(PORT) --workers $(WORKERS)

predict: $(BIN)/.installed  ## classify FILE=path/to/audio with the last registered champion (or MODEL's)
	$(if $(FILE),,$(error usage: make predict FILE=path/to/audio.wav [MODEL=soundflow-esc10]))
	$(BIN)/soundflow predict "$(FILE)" $(if $(MODEL),--model "$(MODEL)") --alias "$(ALIAS)"

clean-cache:  ## forget caches (downloads in data/raw stay)
	rm -rf data/interim data/features data/augmented data/results
