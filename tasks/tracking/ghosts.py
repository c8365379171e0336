"""Runs left RUNNING by a process that died (SIGKILL, out of memory, a closed laptop): find them, close them as KILLED.

Every run records where it runs (host, pid and the pid's start time, so a reused pid is not mistaken for the
same process). A RUNNING run is a ghost when that process is gone (same host), when Prefect says its flow run
is over, or when its parent run is over or a ghost itself."""

from __future__ import annotations

import os
import socket
from typing import Callable

from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.logs import run_logger
from tasks.runtime import HOST_TAG, PID_START_TAG, PID_TAG, pid_start, process_tags  # noqa: F401 (re-exported)
from tasks.tracking import runs as tracking

REASON_TAG = "soundflow.killed_reason"
_FINAL_PREFECT_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_gone(tags: dict[str, str], *, host: str | None = None) -> str | None:
    """Why the run's process is known to be gone, or None (alive, another host, or not recorded)."""
    host = host or socket.gethostname()
    if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
        return None
    pid = int(tags[PID_TAG])
    if not _alive(pid):
        return f"its process {pid} on {host} is gone"
    recorded, now = tags.get(PID_START_TAG), pid_start(pid)
    if recorded and now and recorded != now:
        return f"its process {pid} on {host} is gone (the pid now belongs to another process)"
    return None


def prefect_flow_run_state(flow_run_id: str) -> str | None:
    """The Prefect flow run's state type (e.g. 'CRASHED') if the configured Prefect API knows it, else None."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except Exception:  # not on this server, or no server reachable: no verdict
        return None
    return state.type.value if state is not None else None


def ghost_runs(
    client: MlflowClient,
    *,
    prefect_state: Callable[[str], str | None] = prefect_flow_run_state,
    host: str | None = None,
) -> list[tuple[object, str]]:
    """(run, why) for every RUNNING run, in every experiment, whose process or flow run is over."""
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    if not exp_ids:
        return []
    running = client.search_runs(exp_ids, "attributes.status = 'RUNNING'", max_results=5000)
    by_id = {r.info.run_id: r for r in running}
    reasons: dict[str, str] = {}
    states: dict[str, str | None] = {}
    for r in running:
        why = process_gone(r.data.tags, host=host)
        flow_run = r.data.tags.get("prefect.flow_run_id")
        if why is None and flow_run:
            if flow_run not in states:
                states[flow_run] = prefect_state(flow_run)
            if states[flow_run] in _FINAL_PREFECT_STATES:
                why = f"its Prefect flow run {flow_run} is {states[flow_run]}"
        if why:
            reasons[r.info.run_id] = why
    for r in running:  # children of a ghost, or of a run that already ended
        parent = r.data.tags.get("mlflow.parentRunId")
        if r.info.run_id in reasons or not parent:
            continue
        if parent in reasons:
            reasons[r.info.run_id] = f"its parent run {parent} was left running by a process that died"
        elif parent not in by_id:
            try:
                status = client.get_run(parent).info.status
            except Exception:
                continue
            if status != "RUNNING":
                reasons[r.info.run_id] = f"its parent run {parent} is {status}"
    return [(by_id[i], why) for i, why in reasons.items()]


def close_ghosts(client: MlflowClient, **kwargs) -> list[tuple[str, str]]:
    """Set every ghost run to KILLED with a tag saying why; returns (run id, why)."""
    closed = []
    for run, why in ghost_runs(client, **kwargs):
        client.set_tag(run.info.run_id, REASON_TAG, f"closed by soundflow: {why}")
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append((run.info.run_id, why))
    return closed


@task(cache_policy=NO_CACHE)
def close_ghosts_task() -> int:
    """Close the ghost runs of the configured store (a run's first step), logging each; returns how many."""
    log = run_logger(__name__)
    closed = close_ghosts(tracking.client())
    for run_id, why in closed:
        log.info("closed MLflow run %s as KILLED: %s", run_id, why)
    return len(closed)
