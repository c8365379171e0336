"""Where the cross-validation's (configuration, fold) tasks run: a local process pool, or a Dask cluster."""

from __future__ import annotations

from prefect.task_runners import ProcessPoolTaskRunner

from tasks.config import tracking_uri
from tasks.errors import SoundflowError
from tasks.runtime import init_worker


def task_runner(runner: str, *, n_jobs: int, dask_address: str | None = None):
    """local: n_jobs worker processes (TensorFlow and BLAS threads split between them); dask: the cluster at
    dask_address (its workers need the installed package and the data folder), else a LocalCluster of n_jobs."""
    if runner == "local":
        return ProcessPoolTaskRunner(max_workers=n_jobs, initializer=init_worker, initargs=(n_jobs,))
    if runner != "dask":
        raise SoundflowError(f"unknown runner {runner!r}; use local or dask")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise SoundflowError("--runner dask needs the dask extra: pip install -e '.[dask]'") from exc
    if dask_address:
        if not tracking_uri().startswith(("http://", "https://")):
            raise SoundflowError(
                f"--runner dask with workers on other machines needs an MLflow tracking server, not the local store "
                f"{tracking_uri()}: start one with `mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri "
                f"sqlite:///$PWD/mlruns/server.db` and set MLFLOW_TRACKING_URI=http://<host>:5000"
            )
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": n_jobs, "threads_per_worker": 1, "processes": True})
