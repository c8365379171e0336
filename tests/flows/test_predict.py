"""The predict flow and CLI on a champion whose answers are known: tones of 220 Hz, 3 kHz, and white noise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.data.windows import cut
from tasks.errors import SoundflowError
from tasks.features.representations import compute
from tasks.models.classical import make_classical
from tasks.tracking import pyfunc as serving
from tasks.tracking import registry
from tasks.tracking import runs as tracking

SR = 22050
CLASSES = ["low", "high", "noise"]
MODEL = "soundflow-tones"


def tone(kind: str, duration_s: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A 220 Hz or 3 kHz tone (frequency jittered 3%, a little noise) or white noise, at a random level, float32."""
    n = round(duration_s * sr)
    if kind == "noise":
        y = rng.uniform(-1, 1, n)
    else:
        f = (220.0 if kind == "low" else 3000.0) * rng.uniform(0.97, 1.03)
        y = np.sin(2 * np.pi * f * np.arange(n) / sr + rng.uniform(0, 2 * np.pi)) + rng.uniform(
            0.002, 0.05
        ) * rng.standard_normal(n)
    return (rng.uniform(0.1, 0.5) * y / np.max(np.abs(y))).astype(np.float32)


@pytest.fixture(scope="module")
def tones_model(tmp_path_factory) -> dict:
    """Logistic regression on engineered features of 10 synthetic clips per class, registered as champion.

    Training clips vary in rate and length and go through the model's own preprocessing (resample,
    pad or window), so padded short clips and resampled ones are in the training distribution."""
    out = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(7)
    clips, y = [], []
    for c, kind in enumerate(CLASSES):
        for _ in range(10):
            sr = int(rng.choice([16000, 22050, 44100, 48000]))
            w, _ = cut(
                serving.prepare_waveform(tone(kind, rng.uniform(1.5, 6.0), sr, rng), sr, sr=SR),
                window=5 * SR,
                hop=5 * SR // 2,
            )
            clips.append(w)
            y += [c] * len(w)
    est = make_classical("logreg", seed=0).fit(compute("engineered", np.concatenate(clips), SR, n_jobs=1), y)
    c = tracking.client()
    exp = c.create_experiment("test-predict", artifact_location=(out / "artifacts").as_uri())
    with tracking.run(exp, name="champion-refit") as run_id:
        info = serving.log_audio_model(
            run_id,
            est,
            config={
                "model_name": MODEL,
                "features": "engineered",
                "class_names": CLASSES,
                "sample_rate": SR,
                "window_s": 5.0,
            },
        )
        registry.register_champion(run_id, info.model_uri, name=MODEL, cv_accuracy=1.0, folds_digest="synthetic")
    return {"dir": out, "estimator": est}


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """file -> expected label: several formats, rates, lengths and channel counts, plus broken files."""
    d = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(11)
    files = {
        "low12s.mp3": ("low", 12.0, 22050, 1),
        "high2s.flac": ("high", 2.0, 16000, 1),
        "noise_stereo48k.ogg": ("noise", 4.0, 48000, 2),
        "low44k.wav": ("low", 5.0, 44100, 1),
    }
    out = {}
    for name, (label, dur, sr, ch) in files.items():
        y = tone(label, dur, sr, rng)
        sf.write(d / name, np.stack([y] * ch, axis=1) if ch > 1 else y, sr)
        out[name] = (d / name, label)
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.wav").write_text("not audio")
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR)
    out.update({name: (d / name, None) for name in ("empty.wav", "notes.wav", "silent.wav")})
    return out


def test_predict_flow_prints_a_line_per_file_and_survives_bad_files(prefect_harness, tones_model, audio_files, capsys):
    from flows.predict import predict

    names = ["low12s.mp3", "empty.wav", "high2s.flac", "notes.wav", "noise_stereo48k.ogg", "silent.wav", "low44k.wav"]
    files = [str(audio_files[n][0]) for n in names]
    rows = predict(files=files, model_name=MODEL)
    assert [r["file"] for r in rows] == files
    for name, row in zip(names, rows):
        expected = audio_files[name][1]
        if expected is None:
            assert row["error"] and name in row["error"] and row["label"] is None
        else:
            assert row["error"] is None and row["label"] == expected and row["probability"] > 0.5, row
    assert rows[0]["n_windows"] == 4 and rows[2]["n_windows"] == 1
    assert "empty file" in rows[1]["error"] and "unreadable" in rows[3]["error"] and "silent" in rows[5]["error"]
    lines = [line for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert len(lines) == len(files)
    assert lines[0].split("\t")[:2] == [files[0], "low"] and lines[1].split("\t")[1] == "ERROR"


def test_cli_predict_exit_codes(prefect_harness, tones_model, audio_files):
    from flows.cli import main

    good, bad = str(audio_files["high2s.flac"][0]), str(audio_files["notes.wav"][0])
    assert main(["predict", good, bad, "--model", MODEL]) == 0
    assert main(["predict", bad, "--model", MODEL]) == 1


def test_predict_unknown_model_says_what_to_do(prefect_harness, audio_files):
    from flows.predict import predict

    with pytest.raises(SoundflowError, match="Register a champion first"):
        predict(files=[str(audio_files["low44k.wav"][0])], model_name="soundflow-nothing")


def test_pyfunc_loads_in_a_fresh_process_from_its_bundled_code(tones_model, audio_files):
    """A new interpreter with the checkout hidden (no editable install, cwd elsewhere) still loads and predicts."""
    script = (
        "import sys\n"
        "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
        f"sys.path = [p for p in sys.path if p not in ('', {str(Path.cwd())!r})]\n"
        "import importlib.util; assert importlib.util.find_spec('tasks') is None, 'checkout still importable'\n"
        "import mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{MODEL}@champion')\n"
        "import tasks; assert '/code/tasks' in tasks.__file__, tasks.__file__\n"
        "print(m.predict(pd.DataFrame({'path': sys.argv[1:]}))['label'].tolist())\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    files = [str(audio_files[n][0]) for n in ("low44k.wav", "high2s.flac")]
    proc = subprocess.run(
        [sys.executable, "-c", script, *files],
        cwd=tones_model["dir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['low', 'high']"


def test_waveform_input_matches_file_input(tones_model, audio_files):
    model = serving.load_model(f"models:/{MODEL}@champion")
    y, sr = sf.read(audio_files["low44k.wav"][0], dtype="float32")
    by_wave = model.predict(pd.DataFrame({"waveform": [y.tolist()], "sample_rate": [sr]}))
    by_file = model.predict(pd.DataFrame({"path": [str(audio_files["low44k.wav"][0])]}))
    cols = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(by_wave[cols].to_numpy(), by_file[cols].to_numpy(), rtol=1e-4, atol=1e-6)
    bad = model.predict(pd.DataFrame({"waveform": [[0.0] * 100, [np.nan] * 100], "sample_rate": [sr, sr]}))
    assert "silent" in bad["error"][0] and "non-finite" in bad["error"][1] and bad["error"][0].startswith("row 0")
