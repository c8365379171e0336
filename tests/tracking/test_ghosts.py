"""Runs left RUNNING by a process that died are closed as KILLED, with the reason; live ones are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from tasks import config
from tasks.config import ROOT
from tasks.tracking import ghosts


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_process_gone_tells_a_dead_process_from_a_live_one():
    me = ghosts.process_tags()
    assert ghosts.process_gone(me) is None
    dead = {**me, ghosts.PID_TAG: str(_dead_pid())}
    dead.pop(ghosts.PID_START_TAG, None)
    assert "is gone" in ghosts.process_gone(dead)
    reused = {**me, ghosts.PID_START_TAG: "1"}  # same pid, another start time
    assert "another process" in ghosts.process_gone(reused)
    assert ghosts.process_gone({**dead, ghosts.HOST_TAG: "elsewhere"}) is None  # can't tell on another host


def test_close_ghosts_kills_dead_runs_and_their_children_only(tmp_path):
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.create_experiment("ghosts", artifact_location=(tmp_path / "art").as_uri())
    dead = {**ghosts.process_tags(), ghosts.PID_TAG: str(_dead_pid())}
    dead.pop(ghosts.PID_START_TAG, None)
    parent = c.create_run(exp, run_name="killed parent", tags=dead).info.run_id
    child = c.create_run(
        exp, run_name="child", tags={**ghosts.process_tags(), "mlflow.parentRunId": parent}
    ).info.run_id
    alive = c.create_run(exp, run_name="alive", tags=ghosts.process_tags()).info.run_id
    crashed = c.create_run(
        exp,
        run_name="other host",
        tags={ghosts.HOST_TAG: "elsewhere", ghosts.PID_TAG: "1", "prefect.flow_run_id": "fr-1"},
    ).info.run_id
    states = {"fr-1": "CRASHED"}
    closed = dict(ghosts.close_ghosts(c, prefect_state=states.get))
    assert set(closed) == {parent, child, crashed}
    assert "process" in closed[parent] and parent in closed[child] and "CRASHED" in closed[crashed]
    for run_id in closed:
        run = c.get_run(run_id)
        assert run.info.status == "KILLED" and run.data.tags[ghosts.REASON_TAG].startswith("closed by soundflow")
    assert c.get_run(alive).info.status == "RUNNING"
    assert ghosts.close_ghosts(c, prefect_state=states.get) == []


@pytest.mark.slow  # about 50 s here: a Prefect server, ingestion and a worker start before the kill
@pytest.mark.timeout(900)
def test_a_run_killed_with_sigkill_is_closed_by_runs_clean(tmp_path, esc10_dir):
    """A real `soundflow run` killed (its whole process group) once its runs exist; `runs --clean` closes them."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))},
        "MLFLOW_TRACKING_URI": uri,
        "SOUNDFLOW_DATA": str(tmp_path / "data"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    args = [
        "run",
        "--preset",
        "smoke",
        "--source",
        str(esc10_dir),
        "--experiment",
        "ghost",
        "--features",
        "logmel",
        "--models",
        "cnn2d_logmel",
        "--augmented",
        "",
        "--ensembles",
        "",
    ]
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    c = MlflowClient(uri)
    try:
        deadline = time.monotonic() + 300
        runs = []
        while time.monotonic() < deadline and proc.poll() is None:
            exp = c.get_experiment_by_name("ghost") if (tmp_path / "mlflow.db").exists() else None
            runs = c.search_runs([exp.experiment_id]) if exp else []
            if any("mlflow.parentRunId" in r.data.tags for r in runs):  # the parent and a training run exist
                break
            time.sleep(1)
        assert proc.poll() is None and len(runs) >= 2, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert {r.info.status for r in c.search_runs([exp.experiment_id])} == {"RUNNING"}

    clean = subprocess.run(
        [sys.executable, "-m", "flows.cli", "runs", "--clean"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert clean.returncode == 0, clean.stderr[-3000:]
    after = c.search_runs([exp.experiment_id])
    assert len(after) == len(runs) and {r.info.status for r in after} == {"KILLED"}
    assert all("closed by soundflow" in r.data.tags[ghosts.REASON_TAG] for r in after)
    assert f"closed {len(after)} run(s)" in clean.stdout


def test_configured_store_has_no_ghosts_after_a_clean():
    from flows.cli import main

    assert main(["runs", "--clean"]) == 0
    assert ghosts.ghost_runs(MlflowClient(config.tracking_uri())) == []
