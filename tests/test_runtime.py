"""Process defaults: set before Prefect reads its settings, so they are in force for the run and what it spawns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tasks.runtime import prefect_profile_settings, quiet_defaults

ROOT = Path(__file__).resolve().parents[1]
OURS = ("PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "TF_CPP_MIN_LOG_LEVEL")


def _fresh_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OURS and not k.startswith("PREFECT_")}
    return {**env, "HOME": str(home), "PREFECT_HOME": str(home / ".prefect")}


def test_the_cli_sets_its_defaults_before_prefect_reads_its_settings(tmp_path):
    """On a new home (no ~/.prefect), the settings `soundflow` promises are the ones Prefect itself uses: a
    variable put into os.environ after prefect was imported would leave the start-up time-out at its 20 s."""
    code = (
        "import json, sys; from flows.cli import main;"
        "main(['run', '--preset', 'smoke', '--print-params']);"
        "from prefect.settings import get_current_settings; s = get_current_settings();"
        "import os; print(json.dumps({'imported': 'prefect' in sys.modules,"
        " 'timeout': s.server.ephemeral.startup_timeout_seconds, 'analytics': s.server.analytics_enabled,"
        " 'tf': os.environ.get('TF_CPP_MIN_LOG_LEVEL')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_fresh_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"imported": True, "timeout": 90, "analytics": False, "tf": "3"}


def test_the_users_own_settings_win(tmp_path):
    """A value the user gave, in the environment or in the active Prefect profile, is left alone."""
    home = tmp_path / ".prefect"
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "mine"\n[profiles.mine]\nPREFECT_SERVER_ANALYTICS_ENABLED = "true"\n[profiles.other]\n'
        'PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS = "5"\n'
    )
    env = {"PREFECT_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "0"}
    assert prefect_profile_settings(env) == {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    chosen = quiet_defaults(env)
    assert chosen == {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "0" and "PREFECT_SERVER_ANALYTICS_ENABLED" not in env
    # another profile chosen by PREFECT_PROFILE; an unreadable profile file counts as none
    assert prefect_profile_settings({"PREFECT_HOME": str(home), "PREFECT_PROFILE": "other"}) == {
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "5"
    }
    (home / "profiles.toml").write_text("not = [toml")
    assert prefect_profile_settings({"PREFECT_HOME": str(home)}) == {}


def test_the_temporary_prefect_server_starts_before_the_flow_and_the_flow_uses_it(tmp_path):
    """start_prefect_api() starts Prefect's temporary server in a thread; once its waiter returns the server answers,
    and a flow then runs on that server (no second one). With PREFECT_API_URL set it starts nothing."""
    code = (
        "import json, threading; from tasks.runtime import quiet_defaults, start_prefect_api; quiet_defaults();"
        "ready = start_prefect_api(); started = [t.name for t in threading.enumerate()]; ready();"
        "import httpx; from prefect.server.api.server import SubprocessASGIServer;"
        "server = SubprocessASGIServer(); health = httpx.get(server.api_url + '/health').status_code;"
        "from prefect import flow; from prefect.runtime import flow_run;"
        "run_id = flow(name='probe')(lambda: str(flow_run.id))();"
        "found = httpx.get(f'{server.api_url}/flow_runs/{run_id}').status_code;"
        "print(json.dumps({'thread': 'prefect-api-start' in started, 'health': health, 'found': found,"
        " 'servers': len(SubprocessASGIServer._instances)}))"
    )
    env = _fresh_env(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "thread": True,
        "health": 200,
        "found": 200,
        "servers": 1,
    }

    code = (
        "import threading; from tasks.runtime import start_prefect_api; start_prefect_api()();"
        "print(any(t.name == 'prefect-api-start' for t in threading.enumerate()))"
    )
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # a server elsewhere: nothing to start here
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
