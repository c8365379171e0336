# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= default
SOURCE ?=
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-slow bench ui clean-cache

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,pretrained,dask]'
	@touch $@

run: $(BIN)/.installed  ## the ESC-10 case study (SOURCE=folder|csv|zip|URL, PRESET=smoke|quick|default|book, ARGS="--option value ...")
	$(BIN)/soundflow run --preset $(PRESET) $(if $(SOURCE),--source "$(SOURCE)") $(ARGS)

test: $(BIN)/.installed  ## lint, then the default test run (under 10 minutes)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(BIN)/.installed  ## the long tests too
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

bench: $(BIN)/.installed
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

ui: $(BIN)/.installed  ## MLflow UI on the embedded store: http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --port 5000

clean-cache:  ## forget caches (downloads in data/raw stay)
	rm -rf data/interim data/features data/augmented data/results
