"""Scheduling: the deployment `soundflow serve` builds, prefect.yaml, and (slow) real Prefect + MLflow servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.params import CaseStudyParams, DetectParams, preset
from tasks.config import ROOT, SHARED_ESC10


def test_build_deployment_has_the_cron_schedule_and_the_parameters():
    from flows.serve import build_deployment

    params = preset("smoke", seed=3)
    dep = build_deployment(params, cron="0 3 * * *", name="nightly-smoke")
    assert dep.name == "nightly-smoke" and dep.flow_name == "case-study"
    assert dep.entrypoint == "flows/case_study.py:case_study"
    [sched] = dep.schedules
    assert sched.schedule.cron == "0 3 * * *" and sched.active
    assert dep.concurrency_limit == 1
    assert json.loads(json.dumps(dep.parameters)) == dep.parameters  # stored as JSON by the server
    assert CaseStudyParams(**dep.parameters["params"]) == params


def test_prefect_yaml_defines_the_same_flow_for_a_work_pool():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    cfg = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    dep, detect = cfg["deployments"]
    assert load_flow_from_entrypoint(str(ROOT / dep["entrypoint"])).name == "case-study"
    assert dep["entrypoint"] == "flows/case_study.py:case_study"
    [sched] = dep["schedules"]
    assert CronSchedule(cron=sched["cron"], timezone=sched["timezone"]).cron == "0 2 * * *"
    params = CaseStudyParams(**dep["parameters"]["params"])
    assert params.register_champion and params.preset == "default"
    assert dep["work_pool"]["name"] == "soundflow"
    # the scheduled detection: its parameters validate, and its schedule waits until the user names the folder
    assert load_flow_from_entrypoint(str(ROOT / detect["entrypoint"])).name == "detect"
    assert DetectParams(**detect["parameters"]["params"]).recursive and not detect["schedules"][0]["active"]


def _printed_params(capsys, argv: list[str]) -> CaseStudyParams:
    from flows.cli import main

    assert main(argv) == 0
    return CaseStudyParams.model_validate_json(capsys.readouterr().out)


def test_prefect_yaml_deployment_resolves_to_the_default_preset(capsys):
    """The nightly deployment's parameters, validated as the flow run validates them, are the CLI's default run."""
    from prefect.flows import load_flow_from_entrypoint

    dep = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]
    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
    resolved = flow.validate_parameters(dep["parameters"])["params"]
    assert resolved == _printed_params(capsys, ["run", "--preset", "default", "--print-params"])
    assert "cnn2d_logmel" in resolved.models and resolved.ensemble_members == 4  # not the bare field defaults


def test_a_preset_named_in_the_parameters_fills_the_fields_not_given():
    from flows.params import SMOKE

    p = CaseStudyParams(preset="smoke", seed=5, hyper={"rf50": {"max_depth": 3}})
    assert p.seed == 5 and p.clips_per_class_fold == SMOKE["clips_per_class_fold"] and p.models == SMOKE["models"]
    assert p.hyper == {**SMOKE["hyper"], "rf50": {"max_depth": 3}}
    assert CaseStudyParams(**p.model_dump(mode="json")) == p  # a stored deployment re-validates to itself
    assert CaseStudyParams() == preset("default")


def test_serve_accepts_every_option_run_accepts(capsys, tmp_path):
    import argparse

    from flows.cli import add_param_options, main

    parser = argparse.ArgumentParser()
    add_param_options(parser)
    flags = [a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flags) == len(CaseStudyParams.model_fields) - 1
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    helptext = capsys.readouterr().out
    assert [f for f in flags if f not in helptext] == []
    overrides = tmp_path / "p.json"
    overrides.write_text(json.dumps({"preset": "smoke", "seed": 2}))
    argv = ["--params-file", str(overrides), "--models", "rf50,rbf_svm", "--k", "4", "--print-params"]
    served = _printed_params(capsys, ["serve", *argv])
    assert served == _printed_params(capsys, ["run", *argv]) == preset("smoke", seed=2, models=["rf50", "rbf_svm"], k=4)


def test_serve_without_a_server_explains_what_to_start():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(SystemExit) as exc:
            main(["serve", "--preset", "smoke", "--cron", "*/5 * * * *"])
    text = str(exc.value.code)
    assert "prefect server start" in text and "PREFECT_API_URL=http://127.0.0.1:4200/api" in text


# ---------------------------------------------------------------- slow: real servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_server_command(bin_dir: Path, port: int, state_dir: Path) -> list[str]:
    """`mlflow server` on 127.0.0.1:port, one worker, its store and artifacts under state_dir."""
    return [
        str(bin_dir / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{state_dir / 'mlflow.db'}",
        "--artifacts-destination",
        str(state_dir / "mlartifacts"),
    ]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} answered:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal the process group we started, then SIGKILL what lingers: the whole group, even when its leader is gone
    (a Dask worker killed by a test leaves the Prefect server it started, in its group)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return  # nothing left in the group
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 0)  # raises when nothing is left in the group
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A real Prefect server and an MLflow tracking server on free ports, with their state in a temp dir."""
    if not SHARED_ESC10.is_dir():
        pytest.skip(f"ESC-10 not found at {SHARED_ESC10}")
    tmp = tmp_path_factory.mktemp("servers")
    bin_dir = Path(sys.executable).parent
    p_port, m_port = _free_port(), _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    base.update(
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    procs = []
    try:
        plog = tmp / "prefect-server.log"
        procs.append(
            subprocess.Popen(
                [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(p_port)],
                env=base,
                cwd=tmp,
                stdout=plog.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        mlog = tmp / "mlflow-server.log"
        procs.append(
            subprocess.Popen(
                mlflow_server_command(bin_dir, m_port, tmp),
                env=base,
                cwd=tmp,
                stdout=mlog.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        _wait_http(f"http://127.0.0.1:{p_port}/api/health", procs[0], plog)
        _wait_http(f"http://127.0.0.1:{m_port}/health", procs[1], mlog)
        env = {
            **base,
            "PREFECT_API_URL": f"http://127.0.0.1:{p_port}/api",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{m_port}",
            "SOUNDFLOW_DATA": str(tmp / "data"),
        }
        yield {"env": env, "tmp": tmp, "prefect_api": env["PREFECT_API_URL"], "mlflow": env["MLFLOW_TRACKING_URI"]}
    finally:
        for proc in procs:
            _stop(proc)


@contextlib.contextmanager
def temporary_api(url: str):
    """This process talks to the given Prefect server while open."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def _finished_flow_runs(api: str, **filters) -> list:
    """Flow runs in a final state (completed, failed, crashed, cancelled); the scheduler's future runs are skipped."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    final = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
    by_state = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final)))

    async def read():
        async with PrefectClient(api) as client:  # this server, whatever the test process's own settings
            return await client.read_flow_runs(**filters, flow_run_filter=by_state, sort=FlowRunSort.ID_DESC, limit=50)

    return asyncio.run(read())


def _run_cli(args: list[str], env: dict, log: Path, timeout_s: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
    )
    log.write_text(proc.stdout + "\n----- stderr -----\n" + proc.stderr)
    return proc


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_case_study_against_real_prefect_and_mlflow_servers(servers):
    """`soundflow run --preset smoke`: the flow run is in Prefect, its runs (and the champion) in MLflow."""
    from mlflow import MlflowClient
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    env, tmp = servers["env"], servers["tmp"]
    proc = _run_cli(
        ["run", "--preset", "smoke", "--source", str(SHARED_ESC10), "--register-champion", "--json"],
        env,
        tmp / "run.log",
        1500,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout[proc.stdout.index("\n{") if not proc.stdout.startswith("{") else 0 :])

    runs = _finished_flow_runs(servers["prefect_api"], flow_filter=FlowFilter(name=FlowFilterName(any_=["case-study"])))
    assert len(runs) == 1 and runs[0].state.is_completed()

    client = MlflowClient(tracking_uri=servers["mlflow"])
    exp = client.get_experiment_by_name("soundflow-esc10")
    mruns = client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{runs[0].id}'")
    parent = [r for r in mruns if r.info.run_id == result["parent_run_id"]]
    assert parent and parent[0].info.status == "FINISHED"
    children = [r for r in mruns if r.data.tags.get("mlflow.parentRunId") == result["parent_run_id"]]
    assert len(children) >= 4 and all(r.info.status == "FINISHED" for r in children)

    champion = client.get_model_version_by_alias("soundflow-esc10", "champion")
    assert float(champion.tags["cv_accuracy_mean"]) > 0
    clip = next(SHARED_ESC10.glob("001 - Dog bark/*.ogg"))
    pred = _run_cli(["predict", str(clip)], env, tmp / "predict.log", 600)
    assert pred.returncode == 0, pred.stderr[-5000:]
    assert [line for line in pred.stdout.splitlines() if line.startswith(str(clip))]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_serve_runs_the_schedule_and_leaves_it_active_on_shutdown(servers):
    """`soundflow serve` on an every-minute cron executes a scheduled run; stopping it does not pause the schedule."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    env, tmp = servers["env"], servers["tmp"]
    overrides = tmp / "serve-params.json"
    overrides.write_text(
        json.dumps({"source": str(SHARED_ESC10), "register_champion": False, "experiment": "soundflow-served"})
    )
    log = tmp / "serve.log"
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "serve",
            "--preset",
            "smoke",
            "--cron",
            "* * * * *",
            "--name",
            "smoke-every-minute",
            "--params-file",
            str(overrides),
        ],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    by_deployment = DeploymentFilter(name=DeploymentFilterName(any_=["smoke-every-minute"]))
    try:
        deadline = time.monotonic() + 1200
        done = []
        while time.monotonic() < deadline and not done:
            assert serve.poll() is None, log.read_text()[-5000:]
            time.sleep(10)
            runs = _finished_flow_runs(servers["prefect_api"], deployment_filter=by_deployment)
            assert not [r for r in runs if r.state.is_failed() or r.state.is_crashed()], log.read_text()[-5000:]
            done = [r for r in runs if r.state.is_completed()]
        assert done, f"no completed scheduled run in time:\n{log.read_text()[-5000:]}"
    finally:
        _stop(serve, signal.SIGINT)  # Ctrl-C: serve's own shutdown path (where pause_on_shutdown applies)

    async def deployment():
        async with PrefectClient(servers["prefect_api"]) as client:
            return await client.read_deployment_by_name("case-study/smoke-every-minute")

    dep = asyncio.run(deployment())
    assert not dep.paused and dep.parameters["params"]["source"] == str(SHARED_ESC10)
    served = CaseStudyParams(**dep.parameters["params"])
    assert served == preset("smoke", **json.loads(overrides.read_text()))


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_prefect_deploy_of_prefect_yaml_resolves_to_the_default_preset(servers):
    """`prefect deploy --all` of prefect.yaml on a real server: the stored parameters validate to the default preset."""
    from prefect.client.orchestration import PrefectClient
    from prefect.flows import load_flow_from_entrypoint

    env, tmp = servers["env"], servers["tmp"]
    prefect_bin = str(Path(sys.executable).parent / "prefect")
    # Every command exits 0: with fastapi >=0.151 Prefect 3.8's server answers 422 to its own CLI's `"limit": null`
    # (deploy's closing check for online workers, `deployment ls`), hence the pin in pyproject.toml.
    wide = {**env, "COLUMNS": "200"}  # rich tables: the deployment's full name on one line
    for args in (
        ["work-pool", "create", "soundflow", "--type", "process"],
        ["--no-prompt", "deploy", "--all"],
        ["deployment", "ls"],
    ):
        proc = subprocess.run([prefect_bin, *args], env=wide, cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, (args, out[-3000:])
        assert "Traceback" not in out, (args, out[-3000:])
    assert "case-study/case-study-nightly" in proc.stdout, proc.stdout[-3000:]  # listed by `prefect deployment ls`

    async def deployment():
        async with PrefectClient(servers["prefect_api"]) as client:
            return await client.read_deployment_by_name("case-study/case-study-nightly")

    dep = asyncio.run(deployment())
    assert [s.schedule.cron for s in dep.schedules] == ["0 2 * * *"]
    flow = load_flow_from_entrypoint(str(ROOT / "flows/case_study.py:case_study"))
    resolved = flow.validate_parameters(dep.parameters)["params"]  # as the flow run will see them
    printed = _run_cli(["run", "--preset", "default", "--print-params"], env, tmp / "print.log", 120)
    expected = CaseStudyParams.model_validate_json(printed.stdout)
    assert expected == preset("default")
    assert resolved == expected, {k: (v, getattr(expected, k)) for k, v in resolved if v != getattr(expected, k)}

    # A custom run of this deployment that names another preset (as from the UI) runs that preset: a worker
    # executes it here with the smoke preset on the real data.
    from prefect.deployments import run_deployment

    custom = {"params": {"preset": "smoke", "source": str(SHARED_ESC10), "experiment": "soundflow-deployed"}}
    with temporary_api(servers["prefect_api"]):
        flow_run = run_deployment("case-study/case-study-nightly", parameters=custom, timeout=0)
    venv_path = {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    }  # the worker runs `python`
    worker = subprocess.run(
        [prefect_bin, "worker", "start", "--pool", "soundflow", "--run-once"],
        env=venv_path,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    (tmp / "worker.log").write_text(worker.stdout + worker.stderr)

    async def read_run():
        async with PrefectClient(servers["prefect_api"]) as client:
            return await client.read_flow_run(flow_run.id)

    done = asyncio.run(read_run())
    assert done.state.is_completed(), (worker.stdout + worker.stderr)[-5000:]
    ran = CaseStudyParams(**done.parameters["params"])
    assert ran == preset("smoke", source=str(SHARED_ESC10), experiment="soundflow-deployed")
