"""All MLflow writes: explicit run ids through MlflowClient, never the thread-local active run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag

from tasks import config
from tasks.data.manifest import read_manifest
from tasks.data.split import split_scheme
from tasks.records import Dataset
from tasks.runtime import process_tags

MAX_PARAM_LEN = 6000
# MLflow 3 opens an experiment on its GenAI overview unless tagged as model development (the training runs view).
EXPERIMENT_KIND, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
_SAVE_LOCK = threading.Lock()


def client() -> MlflowClient:
    """A client on the configured store (embedded sqlite under mlruns/ unless MLFLOW_TRACKING_URI)."""
    uri = config.tracking_uri()
    # the registry must follow the store: MLflow's own default is ./mlflow.db in the working directory
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI", uri))


def ensure_experiment(name: str) -> str:
    """Experiment id for `name`, created once (before any fan-out, so sqlite sees one writer)."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND) != TRAINING_KIND:
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)
        return exp.experiment_id
    return c.create_experiment(
        name, artifact_location=config.artifact_location(name), tags={EXPERIMENT_KIND: TRAINING_KIND}
    )


def set_description(run_id: str, text: str) -> None:
    """The run's description in the MLflow UI (markdown)."""
    client().set_tag(run_id, "mlflow.note.content", text)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts to dotted keys with string values, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text[:MAX_PARAM_LEN]
    return flat


def git_commit() -> str:
    """The repo's HEAD commit, or 'unknown' outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config.ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run(
    experiment_id: str,
    *,
    name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    parent_id: str | None = None,
) -> str:
    """Create a run (nested under parent_id if given) and log its params; returns the run id."""
    all_tags = {"mlflow.source.git.commit": git_commit(), **_flow_run_tags(), **process_tags(), **(tags or {})}
    if parent_id:
        all_tags["mlflow.parentRunId"] = parent_id
    run = client().create_run(experiment_id, run_name=name, tags=all_tags)
    if params:
        log_params(run.info.run_id, params)
    return run.info.run_id


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    """Log (flattened) params in batches of 100."""
    items = [Param(k, v) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):
        client().log_batch(run_id, params=items[i : i + 100])


def log_metrics(run_id: str, metrics: Mapping[str, float], *, step: int = 0) -> None:
    """Log scalar metrics (at `step`) in one batch."""
    log_batch(run_id, metrics, step=step)


def log_batch(
    run_id: str, metrics: Mapping[str, float] | None = None, series: Mapping[str, Any] | None = None, *, step: int = 0
) -> None:
    """Scalar metrics (at `step`) and series (step = fold or epoch, so the UI draws a curve) in as few calls as
    MLflow allows (1,000 values a call); NaN and None are left out."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None and np.isfinite(v)]
    for key, values in (series or {}).items():
        items += [Metric(key, float(v), now, i) for i, v in enumerate(values) if np.isfinite(v)]
    for i in range(0, len(items), 1000):
        client().log_batch(run_id, metrics=items[i : i + 1000])


def history_series(history: Mapping[str, list], *, fold: int) -> dict[str, list]:
    """Per-epoch curves of one fold as series for log_batch, e.g. fold0_loss, fold0_val_accuracy."""
    return {f"fold{fold}_{key}": values for key, values in history.items()}


def save_figure(fig, path: str | Path) -> None:
    """A matplotlib figure as PNG (as log_figure renders it), closed."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def log_folder(run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
    """Every file under `folder` as the run's artifacts (one call)."""
    client().log_artifacts(run_id, str(folder), artifact_path)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark a run FINISHED / FAILED / KILLED."""
    client().set_terminated(run_id, status=status)


@contextlib.contextmanager
def run(experiment_id: str, *, name: str, params=None, tags=None, parent_id=None) -> Iterator[str]:
    """A run that ends FINISHED, or FAILED (KILLED on Ctrl-C) if its block raises."""
    run_id = start_run(experiment_id, name=name, params=params, tags=tags, parent_id=parent_id)
    try:
        yield run_id
    except KeyboardInterrupt:
        end_run(run_id, "KILLED")
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            client().set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        end_run(run_id, "FAILED")
        raise
    else:
        end_run(run_id, "FINISHED")


def log_figure(run_id: str, fig, artifact_file: str) -> None:
    """Log a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    client().log_figure(run_id, fig, artifact_file, save_kwargs={"dpi": 110, "bbox_inches": "tight"})
    plt.close(fig)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """Log a text artifact (markdown, report, json)."""
    client().log_text(run_id, text, artifact_file)


def log_frame(run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    """Log a DataFrame as a CSV artifact."""
    log_text(run_id, frame.to_csv(index=False), artifact_file)


def log_file(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file from disk."""
    client().log_artifact(run_id, str(path), artifact_path)


def log_dataset(
    run_id: str, manifest: pd.DataFrame, *, name: str, digest: str, source: str, context: str = "training"
) -> None:
    """Log the manifest as the run's dataset input (the Datasets column of the MLflow UI)."""
    import mlflow.data
    from mlflow.data.dataset_source_registry import get_registered_sources

    # A local file's source named explicitly: from a plain path MLflow warns that two source types match.
    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    # Integer columns declared as float64 in the dataset's schema (MLflow warns that ints cannot hold missing
    # values); the manifest itself is logged as a file, unchanged.
    ints = manifest.select_dtypes("integer").columns
    frame = manifest.astype({c: "float64" for c in ints})
    ds = mlflow.data.from_pandas(frame, source=local._resolve(source), name=name, digest=digest, targets="class_id")
    client().log_inputs(
        run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])]
    )


def run_url(run_id: str) -> str:
    """Where to look at a run: the server's UI link, or the local `mlflow ui` default."""
    c = client()
    r = c.get_run(run_id)
    uri = config.tracking_uri()
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{r.info.experiment_id}/runs/{run_id}"


def failed(status: str) -> bool:
    return status == RunStatus.to_string(RunStatus.FAILED)


_FLOW_RUN_TAGS: dict[str, dict[str, str]] = {}


def _flow_run_tags() -> dict[str, str]:
    """The Prefect flow run's ids and names, looked up once per flow run (each lookup asks the Prefect API)."""
    from prefect.runtime import flow_run

    if not flow_run.id:
        return {}
    if flow_run.id not in _FLOW_RUN_TAGS:
        _FLOW_RUN_TAGS[flow_run.id] = _lookup_flow_run_tags()
    return _FLOW_RUN_TAGS[flow_run.id]


def _lookup_flow_run_tags() -> dict[str, str]:
    from prefect.runtime import flow_run

    # the top-level flow run (the case study), also for runs opened in its cross-validation subflow: failure
    # hooks and the ghost check look runs up by it
    root = str(flow_run.root_flow_run_id or flow_run.id)
    tags = {
        "prefect.flow_run_id": root,
        "prefect.flow_run_name": str(flow_run.name),
        "prefect.flow_name": str(flow_run.flow_name),
    }
    if root != str(flow_run.id):
        tags["prefect.subflow_run_id"] = str(flow_run.id)
    return tags


def open_parent_run(experiment: str, params: dict, data: Dataset) -> tuple[str, str]:
    """Create the experiment (once, before any fan-out) and the flow's parent run; returns (experiment id, run id)."""
    exp_id = ensure_experiment(experiment)
    manifest_path, dataset_digest = data.manifest, data.digest
    manifest = read_manifest(manifest_path)
    tags = {
        "soundflow.kind": "flow",
        "soundflow.dataset_digest": dataset_digest,
        "soundflow.dataset": data.name,
        "soundflow.layout": data.layout,
        "soundflow.recordings": str(data.n_recordings),
        "soundflow.segments": str(len(manifest)),
        "soundflow.window_s": f"{data.window_s:g}",
        "soundflow.groups": "from the dataset"
        if data.has_groups
        else "none: each file is its own group (pass --group-pattern or a group column)",
    }
    run_id = start_run(exp_id, name=f"case-study {params.get('preset', '')}".strip(), params=params, tags=tags)
    log_dataset(run_id, manifest, name=experiment, digest=dataset_digest, source=str(Path(manifest_path).resolve()))
    log_file(run_id, manifest_path, "dataset")
    return exp_id, run_id


def tag_split(run_id: str, splits: str) -> None:
    """The scheme a run's splits were made with (`soundflow.split`), and why it is not the one asked for."""
    scheme, note = split_scheme(splits)
    tag_run(run_id, {"soundflow.split": scheme, **({"soundflow.split_fallback": note} if note else {})})


def tag_run(run_id: str, tags: Mapping[str, str]) -> None:
    """Set tags on a run (nothing for no tags)."""
    items = [RunTag(key, str(value)[:5000]) for key, value in tags.items()]
    if items:
        client().log_batch(run_id, tags=items)


def fail_runs_of_flow_run(flow_run_id: str, status: str = "FAILED") -> int:
    """Mark every still-RUNNING MLflow run of a Prefect flow run as ended (a flow's failure hook)."""
    c = client()
    n = 0
    for exp in c.search_experiments():
        for r in c.search_runs(
            [exp.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run_id}' and attributes.status = 'RUNNING'"
        ):
            end_run(r.info.run_id, status)
            n += 1
    return n


def keras_requirements() -> list[str]:
    """What a logged Keras model needs, stated (MLflow's inference of it fails here and warns)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("keras", "tensorflow", "numpy")]


def save_keras_model(model, example: np.ndarray, folder: str | Path) -> None:
    """Save a Keras model in MLflow's Keras flavor (signature + input example) into an existing empty folder."""
    import mlflow.keras
    from mlflow.models import infer_signature

    # an eager call: model.predict would trace a predict function for this one example
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    with _SAVE_LOCK:  # MLflow's save_model is not thread-safe
        # MLflow 3.17's Keras flavor writes the input example before creating the folder: it must exist
        mlflow.keras.save_model(
            model, str(folder), signature=signature, input_example=example, pip_requirements=keras_requirements()
        )
