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
