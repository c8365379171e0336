"""The closing summary a person reads: best results with SEM, the champion and why, the two next commands."""

from tasks.records import Config, ConfigResult, EnsembleResult, Registration, RunSummary
from tasks.tracking.run_summary import summary_text


def _summary(**extra):
    results = [
        ConfigResult(
            Config(f"m{i}", "engineered", "classical"),
            f"r{i}",
            "p.npy",
            cv_accuracy_mean=0.5 + i / 100,
            cv_accuracy_sem=0.01 * (i + 1),
            macro_f1_mean=0.5,
        )
        for i in range(8)
    ]
    ensemble = EnsembleResult(
        group="ensemble",
        combiner="average",
        optimizer="jaya",
        seed=0,
        members=(results[-1].name, results[-2].name),
        final_members=(results[-1], results[-2]),
        run_id="e",
        proba="e.npy",
        cv_accuracy_mean=0.9,
        cv_accuracy_sem=0.012,
        macro_f1_mean=0.9,
    )
    fields = {
        "results": (*results, ensemble),
        "dataset": "esc10",
        "source": "",
        "preset": "default",
        "n_clips": 400,
        "n_recordings": 400,
        "protocol": "official folds",
        "seconds": 125.0,
        "tracking_uri": "sqlite:////tmp/x.db",
        "experiment_id": "1",
        "parent_run_id": "abc",
        "run_url": "http://127.0.0.1:5000/#/experiments/1/runs/abc",
        "registered_model": "soundflow-esc10",
    }
    return RunSummary(**{**fields, **extra})


def test_summary_lists_the_best_first_with_sem_and_the_next_commands():
    text = summary_text(_summary(), n_models=3)
    lines = text.splitlines()
    assert "2m05s" in lines[0] and "400 clips" in lines[0]
    firsts = [line.split()[0] for line in lines if line.startswith("  m") and "+-" in line]
    assert firsts == ["m7/engineered", "m6/engineered", "m5/engineered"]
    assert "57.0 +- 8.0" in text and "90.0 +- 1.2" in text
    assert "mlflow ui --backend-store-uri sqlite:////tmp/x.db" in text and "/runs/abc" in text
    assert "soundflow predict --model soundflow-esc10" in text and "not registered" in text


def test_summary_says_why_the_champion_moved_or_not():
    champ = Registration(
        name="soundflow-esc10",
        version="4",
        alias_moved=False,
        uri="models:/soundflow-esc10/4",
        configuration="m7/engineered",
        reason="candidate 0.570 does not beat champion v3 0.600 on the same folds",
    )
    text = summary_text(_summary(champion=champ, tracking_uri="http://mlflow:5000"))
    assert "v4 (m7/engineered)" in text and "not moved: candidate 0.570 does not beat" in text
    assert "open http://127.0.0.1:5000/#/experiments/1/runs/abc" in text


def test_run_description_is_one_paragraph_with_dataset_protocol_best_and_champion():
    from tasks.tracking.run_summary import run_description

    text = run_description(_summary(preset="smoke", source="/data/esc10"))
    assert "\n" not in text and "esc10 (400 clips, from /data/esc10)" in text and "official folds" in text
    assert (
        "Best: ensemble:average at 90.0 +- 1.2%" in text and "best single model m7/engineered at 57.0 +- 8.0%" in text
    )
    assert "No champion registered" in text


def test_next_commands_run_as_printed_from_the_repository_root(monkeypatch, esc10_dir):
    """Without an activated venv: each command names an executable that exists from here, and predict names a real
    clip of the run's source; both answer --help."""
    import os
    import shlex
    import subprocess
    from pathlib import Path

    from tasks.config import ROOT
    from tasks.tracking.run_summary import next_commands

    monkeypatch.chdir(ROOT)
    champ = Registration("soundflow-esc10", "1", True, "models:/soundflow-esc10@champion", "x", "m7")
    commands = next_commands(_summary(champion=champ, source=str(esc10_dir)))
    assert len(commands) == 2
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no venv on PATH, as for a new user after `make run`
    for command in commands:
        words = shlex.split(command.split("   #")[0])
        assert os.access(words[0], os.X_OK), command
        assert subprocess.run([words[0], words[1], "--help"], env=env, capture_output=True, timeout=120).returncode == 0
    clip = Path(shlex.split(commands[1])[-1])
    assert clip.is_file() and clip.is_relative_to(esc10_dir) and clip.suffix == ".ogg"


def test_the_json_summary_is_plain_values_with_the_keys_scripts_read():
    import json

    from tasks.tracking.run_summary import summary_json

    champ = Registration("soundflow-esc10", "2", True, "models:/soundflow-esc10@champion", "beats v1", "m7")
    out = json.loads(json.dumps(summary_json(_summary(champion=champ))))
    assert out["parent_run_id"] == "abc" and out["best"] == "ensemble:average" and out["best_accuracy"] == 0.9
    assert out["results"]["m7/engineered"] == 0.57 and out["champion"]["version"] == "2"
    assert {r["family"] for r in out["results_table"]} == {"classical", "ensemble"}
