"""Paths built from the project root and the MLflow store location."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
MLRUNS = ROOT / "mlruns"


def data_dir() -> Path:
    """Root of downloads, caches and outputs; SOUNDFLOW_DATA overrides (tests use a temp dir)."""
    return Path(os.environ.get("SOUNDFLOW_DATA", ROOT / "data")).resolve()


def stage_dir(stage: str) -> Path:
    """data/<stage> (raw, interim, features, models, reports), created on demand."""
    path = data_dir() / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """MLflow store: MLFLOW_TRACKING_URI if set, else an absolute sqlite path under mlruns/."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    MLRUNS.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{MLRUNS / 'mlflow.db'}"
    # export it: MLflow's own internal look-ups (registry sources, fluent API) otherwise use ./mlflow.db
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def artifact_location(experiment_name: str) -> str | None:
    """Artifacts of a sqlite store live beside its .db file (mlruns/artifacts/...); a server picks its own."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return (db.parent / "artifacts" / experiment_name).resolve().as_uri()


# The real ESC-10 dataset beside the repo (tests and benchmarks read it; never copied into the repo).
SHARED_ESC10 = ROOT.parent / "shared" / "datasets" / "esc10"


@contextmanager
def workers_share_prefect_api() -> Iterator[None]:
    """While open, worker processes spawned by a process-pool task runner talk to this process's Prefect API.

    Without a PREFECT_API_URL, Prefect runs a temporary server per process; the pool's workers inherit
    os.environ, so pointing it at the running one (ephemeral or test harness) spares each worker its own
    server. Restored on exit, because the temporary server dies with the flow's process."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        os.environ["PREFECT_API_URL"] = str(client.api_url)
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
