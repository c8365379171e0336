"""--runner dask against a real Dask scheduler and two worker processes, with a real MLflow tracking server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.config import ROOT, SHARED_ESC10
from tests.flows.test_serve import _free_port, _stop, _wait_http, mlflow_server_command

pytestmark = pytest.mark.slow
RUN = [
    "run",
    "--preset",
    "smoke",
    "--source",
    str(SHARED_ESC10),
    "--models",
    "gaussian_nb,rf50,logreg",
    "--features",
    "engineered",
    "--augmented",
    "",
    "--ensembles",
    "average",
    "--no-register-champion",
    "--no-audit",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler`, two `dask worker` processes (no nanny: their pids are the workers') and `mlflow server`."""
    pytest.importorskip("prefect_dask", reason="the dask extra is not installed: pip install -e '.[dask]'")
    if not SHARED_ESC10.is_dir():
        pytest.skip(f"ESC-10 not found at {SHARED_ESC10}")
    tmp = tmp_path_factory.mktemp("dask")
    bin_dir = Path(sys.executable).parent
    d_port, m_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL="2",
        SOUNDFLOW_DATA=str(tmp / "data"),
        PREFECT_HOME=str(tmp / "prefect-home"),
    )
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, args: list[str]) -> subprocess.Popen:
        procs[name] = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=(tmp / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return procs[name]

    try:
        start(
            "scheduler",
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(d_port), "--no-dashboard"],
        )
        address = f"tcp://127.0.0.1:{d_port}"
        for i in range(2):
            start(
                f"worker{i}",
                [
                    str(bin_dir / "dask"),
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ],
            )
        start("mlflow", mlflow_server_command(bin_dir, m_port, tmp))
        _wait_for_workers(address, procs, tmp, n=2)
        _wait_http(f"http://127.0.0.1:{m_port}/health", procs["mlflow"], tmp / "mlflow.log")
        yield {
            "address": address,
            "env": {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{m_port}"},
            "tmp": tmp,
            "procs": procs,
        }
    finally:
        for proc in procs.values():
            _stop(proc)


def _wait_for_workers(address: str, procs: dict, tmp: Path, *, n: int, timeout_s: float = 180) -> None:
    """Wait until the scheduler answers and n workers have joined it (a condition, not a sleep); a process that
    exits first fails at once with its log."""
    from distributed import Client

    deadline = time.monotonic() + timeout_s
    while True:
        dead = [name for name, p in procs.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead[0]} exited first:\n{(tmp / f'{dead[0]}.log').read_text()[-3000:]}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{n} Dask workers did not join {address} within {timeout_s:.0f} s")
        try:
            with Client(address, timeout=min(10, left)) as client:
                client.wait_for_workers(n, timeout=left)
                return
        except (OSError, TimeoutError):
            continue  # the scheduler is not listening yet


def _cli(args: list[str], env: dict, log: Path, timeout_s: float = 900, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "soundflow"), *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kw,
    )


def _children(client: MlflowClient, experiment: str) -> dict:
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_dask_runs_folds_on_the_workers_with_the_local_runners_results(cluster):
    env, tmp = cluster["env"], cluster["tmp"]
    t0 = time.perf_counter()
    dask = _cli(
        [*RUN, "--runner", "dask", "--dask-address", cluster["address"], "--experiment", "on-dask"],
        env,
        tmp / "dask-run.log",
    )
    assert dask.wait(900) == 0, (tmp / "dask-run.log").read_text()[-4000:]
    dask_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    local = _cli(
        [*RUN, "--experiment", "on-local"], {**env, "SOUNDFLOW_DATA": str(tmp / "data-local")}, tmp / "local-run.log"
    )
    assert local.wait(900) == 0, (tmp / "local-run.log").read_text()[-4000:]
    local_s = time.perf_counter() - t0
    print(f"\ndask_run_s={dask_s:.1f} local_run_s={local_s:.1f}")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    on_dask, on_local = _children(client, "on-dask"), _children(client, "on-local")
    configs = {"gaussian_nb/engineered", "rf50/engineered", "logreg/engineered", "ensemble:average"}
    assert configs <= set(on_dask) and configs <= set(on_local)
    workers = {str(p.pid) for name, p in cluster["procs"].items() if name.startswith("worker")}
    for name in configs:
        a, b = on_dask[name], on_local[name]
        assert a.info.status == "FINISHED"
        assert a.data.metrics["cv_accuracy_mean"] == pytest.approx(b.data.metrics["cv_accuracy_mean"])
        if name != "ensemble:average":
            pids = set(a.data.tags["soundflow.fold_pids"].split(","))
            assert pids <= workers and str(dask.pid) not in pids  # trained in the worker processes
    assert not [r for r in on_dask.values() if r.info.status == "RUNNING"]


def test_a_worker_killed_mid_run_leaves_no_run_running(cluster):
    env, tmp = cluster["env"], cluster["tmp"]
    run = _cli(
        [
            *RUN,
            "--models",
            "rf500,rbf_svm,logreg",
            "--runner",
            "dask",
            "--dask-address",
            cluster["address"],
            "--experiment",
            "kill-worker",
        ],
        {**env, "SOUNDFLOW_DATA": str(tmp / "data-kill")},
        tmp / "kill.log",
    )
    log = tmp / "kill.log"
    deadline = time.monotonic() + 600
    while "fit " not in log.read_text() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.5)
    os.kill(cluster["procs"]["worker0"].pid, signal.SIGKILL)
    code = run.wait(900)
    text = log.read_text()
    assert code in (0, 1), text[-4000:]  # completed (work retried on the other worker) or failed cleanly
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = _children(client, "kill-worker")
    assert runs and not [r for r in runs.values() if r.info.status == "RUNNING"]
    print(f"\nkilled worker: exit {code}, runs {sorted((n, r.info.status) for n, r in runs.items())}")
