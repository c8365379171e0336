"""MLflow's own REST scoring server (`make serve-model`) on a registered champion, started without an activated venv."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.data.audio import load_audio
from tasks.features.representations import compute
from tasks.models.classical import make_classical
from tasks.tracking import pyfunc as serving
from tasks.tracking import registry
from tasks.tracking import runs as tracking
from tests.conftest import esc10_five_second_clips

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL = "soundflow-served"  # not soundflow-esc10: a smoke flow run in the same session registers that one
SR = 22050
STARTUP_S = 240  # loading MLflow, the model and its bundled code on 2 busy cores


@pytest.fixture(scope="module")
def champion(esc10_dir, tmp_path_factory) -> dict:
    """Logistic regression on engineered features of 4 real ESC-10 clips per class, registered as @champion;
    one more clip per class is held out for the requests."""
    out = tmp_path_factory.mktemp("served")
    manifest, held, classes = esc10_five_second_clips(esc10_dir, per_class=4, held_out=1)
    clips = np.stack([load_audio(p, sr=SR, duration_s=5.0) for p in manifest["path"]])
    est = make_classical("logreg", seed=0).fit(compute("engineered", clips, SR, n_jobs=1), manifest["class_id"])
    exp = tracking.client().create_experiment("test-serve-model", artifact_location=(out / "artifacts").as_uri())
    with tracking.run(exp, name="champion-refit") as run_id:
        info = serving.log_audio_model(
            run_id,
            est,
            config={
                "model_name": MODEL,
                "features": "engineered",
                "class_names": list(classes),
                "sample_rate": SR,
                "window_s": 5.0,
            },
        )
        registry.register_champion(run_id, info.model_uri, name=MODEL, cv_accuracy=0.5, folds_digest="tiny")
    return {"classes": list(classes), "held": dict((label, path) for path, label in held)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _without_venv(path: str) -> str:
    """PATH minus the venv's bin folders: the scoring server must not depend on an activated venv."""
    venv_bins = {str((Path(sys.prefix) / "bin").resolve()), str((ROOT / ".venv" / "bin").resolve())}
    return os.pathsep.join(p for p in path.split(os.pathsep) if p and str(Path(p).resolve()) not in venv_bins)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except (urllib.error.URLError, OSError):
        return 0


def _post(url: str, body: dict) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def server(champion, tmp_path_factory):
    """`make serve-model` for the champion on a free port, PATH without the venv; its process group is killed after."""
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PATH"] = _without_venv(os.environ.get("PATH", "/usr/bin:/bin"))  # MLFLOW_TRACKING_URI: the test store
    venv = Path(sys.prefix)
    # -o: never (re)install the venv from a test, even if pyproject.toml is newer than the stamp
    cmd = ["make", "-C", str(ROOT), "-o", f"{venv}/bin/.installed", "serve-model"]
    cmd += [f"VENV={venv}", f"MODEL={MODEL}", f"PORT={port}", "WORKERS=1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def tail() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while _get(f"{base}/ping") != 200:
            assert proc.poll() is None, f"scoring server exited with {proc.returncode}:\n{tail()}"
            assert time.monotonic() < deadline, f"no /ping 200 within {STARTUP_S} s:\n{tail()}"
            time.sleep(1.0)
        yield {"url": base, "tail": tail}
    finally:
        for sig, grace_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def in_process(champion) -> dict:
    """The same champion loaded in this process, on the held-out rooster clip: by path and by waveform."""
    path = champion["held"]["rooster"]
    y, sr = sf.read(path, dtype="float32")
    model = serving.load_model(f"models:/{MODEL}@champion")
    return {
        "path": path,
        "waveform": y,
        "sample_rate": sr,
        "by_path": model.predict(pd.DataFrame({"path": [path]})),
        "by_wave": model.predict(pd.DataFrame({"waveform": [y.tolist()], "sample_rate": [sr]})),
    }


def _check(status, body, expected: pd.DataFrame, classes: list[str], tail) -> None:
    assert status == 200, f"{status}: {str(body)[:2000]}\n{tail()}"
    (row,) = body["predictions"]
    assert row["error"] == "" and row["label"] in classes, row
    assert row["label"] == expected["label"][0]
    p_cols = [f"p_{c}" for c in classes]
    np.testing.assert_allclose([row[c] for c in p_cols], expected[p_cols].to_numpy()[0], rtol=1e-4, atol=1e-6)


# `inputs` must be a list of records (or one record): MLflow reads {"inputs": {"path": [a, b]}} as ONE row
# whose path is the list, for a model with a column signature.
@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "inputs"])
def test_served_champion_classifies_a_file_path(server, champion, in_process, fmt):
    path = in_process["path"]
    body = {
        "dataframe_split": {"dataframe_split": {"columns": ["path"], "data": [[path]]}},
        "dataframe_records": {"dataframe_records": [{"path": path}]},
        "inputs": {"inputs": [{"path": path}]},
    }[fmt]
    status, out = _post(f"{server['url']}/invocations", body)
    _check(status, out, in_process["by_path"], champion["classes"], server["tail"])


@pytest.mark.parametrize("fmt", ["dataframe_split", "inputs"])
def test_served_champion_classifies_a_waveform(server, champion, in_process, fmt):
    y, sr = in_process["waveform"].tolist(), in_process["sample_rate"]
    body = {
        "dataframe_split": {"dataframe_split": {"columns": ["waveform", "sample_rate"], "data": [[y, sr]]}},
        "inputs": {"inputs": [{"waveform": y, "sample_rate": sr}]},
    }[fmt]
    status, out = _post(f"{server['url']}/invocations", body)
    _check(status, out, in_process["by_wave"], champion["classes"], server["tail"])
    assert out["predictions"][0]["label"] == in_process["by_path"]["label"][0]


def test_served_champion_reports_a_bad_row_and_classifies_the_rest(server, champion, in_process):
    body = {"dataframe_records": [{"path": "/nonexistent/clip.wav"}, {"path": in_process["path"]}]}
    status, out = _post(f"{server['url']}/invocations", body)
    assert status == 200, out
    bad, good = out["predictions"]
    assert not isinstance(bad["label"], str) and "clip.wav" in bad["error"], bad  # MLflow writes NaN
    assert good["label"] == in_process["by_path"]["label"][0]


def test_make_predict_gives_the_in_process_label(prefect_harness, champion, in_process):
    """`make predict FILE=...` (a path with spaces, PATH without the venv) prints the champion's label."""
    from prefect.settings import PREFECT_API_URL

    venv, path = Path(sys.prefix), in_process["path"]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(PATH=_without_venv(os.environ.get("PATH", "/usr/bin:/bin")), PREFECT_API_URL=PREFECT_API_URL.value())
    cmd = ["make", "-C", str(ROOT), "-o", f"{venv}/bin/.installed", "predict", f"VENV={venv}"]
    cmd += [f"FILE={path}", f"MODEL={MODEL}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith(f"{path}\t")]
    assert [line[1] for line in lines] == [in_process["by_path"]["label"][0]], proc.stdout[-2000:]


def test_served_champion_scores_windows_on_a_timeline(server, champion, in_process, tmp_path):
    """params {"output": "windows"}: one row per window of each file, the last one partial, a bad row kept."""
    y, sr = in_process["waveform"], in_process["sample_rate"]
    long = tmp_path / "rooster 12.3 s.wav"
    sf.write(long, np.resize(y, round(12.3 * sr) if y.ndim == 1 else (round(12.3 * sr), y.shape[1])), sr)
    frame = {"columns": ["path"], "data": [[str(long)], ["/nonexistent/clip.wav"]]}
    status, out = _post(f"{server['url']}/invocations", {"dataframe_split": frame, "params": {"output": "windows"}})
    assert status == 200, f"{status}: {str(out)[:2000]}\n{server['tail']()}"
    rows = pd.DataFrame(out["predictions"])
    classes = champion["classes"]
    assert list(rows.columns) == [
        "file",
        "start_s",
        "end_s",
        *classes,
        "loudness_db",
        "peak_db",
        "floor_db",
        "partial",
        "error",
    ]
    assert rows["file"].tolist() == [str(long)] * 9 + ["/nonexistent/clip.wav"]
    np.testing.assert_allclose(rows["start_s"].iloc[:9], np.arange(9.0))  # 5-s windows every 1 s
    assert rows["partial"].tolist() == [False] * 8 + [True, False] and rows["end_s"].iloc[8] == pytest.approx(12.3)
    assert (rows["error"].iloc[:9] == "").all() and "clip.wav" in rows["error"].iloc[9]
    model = serving.load_model(f"models:/{MODEL}@champion")
    expected = model.predict(pd.DataFrame({"path": [str(long)]}), params={"output": "windows"})
    np.testing.assert_allclose(rows[classes].to_numpy()[:9], expected[classes].to_numpy(), rtol=1e-4, atol=1e-6)
    status, text = _post(f"{server['url']}/invocations", {"dataframe_split": frame, "params": {"output": "frames"}})
    assert status == 400 and "'clips'" in str(text) and "'windows'" in str(text), text
