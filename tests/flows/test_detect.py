"""soundflow detect end to end: a champion registered with calibrated thresholds, long recordings written by the
test (real ESC-10 clips placed at known times over noise), the four outputs read back, a second run that skips
every file, a bad file that does not stop the others, and evaluate-detections on hand-made tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from mlflow import MlflowClient
from prefect.logging import disable_run_logger

from tasks import config
from tasks.data.annotations import read_audacity, read_raven
from tasks.data.audio import load_audio
from tasks.data.manifest import write_manifest
from tasks.data.split import make_splits
from tasks.evaluation.train import fit_fold
from tasks.features.representations import compute
from tasks.records import Config, CVInputs, Dataset
from tasks.tracking import runs as tracking
from tasks.tracking.cv_runs import log_configuration_task
from tasks.tracking.registry import register_task
from tests.conftest import esc10_five_second_clips

SR = 22050
MODEL = "soundflow-detect-test"


def train_tiny_champion(esc10_dir: Path, out: Path, *, per_class: int = 8, name: str = "detect-test") -> dict:
    """logreg on engineered vectors of `per_class` ESC-10 clips per class, cross-validated and registered as the
    flow does it (thresholds calibrated on its out-of-fold scores) in the configured MLflow store."""
    manifest, held, classes = esc10_five_second_clips(esc10_dir, per_class, 1, distinct_groups=True)
    write_manifest(out / "manifest.csv", manifest)
    clips = np.stack([load_audio(p, sr=SR, duration_s=5.0) for p in manifest["path"]])
    np.save(out / "engineered.npy", compute("engineered", clips, SR, n_jobs=1))
    splits = make_splits(manifest, scheme="group_kfold", k=3, seed=0)
    (out / "splits.json").write_text(json.dumps([{"train": a.tolist(), "test": b.tolist()} for a, b in splits]))
    inputs = CVInputs(str(out / "manifest.csv"), str(out / "splits.json"), {"engineered": str(out / "engineered.npy")})
    exp = tracking.client().create_experiment(f"test-{name}", artifact_location=(out / "mlruns").as_uri())
    parent = tracking.start_run(exp, name="case-study")
    configuration = Config("logreg", "engineered", "classical")
    with disable_run_logger():
        folds = [fit_fold(configuration, inputs, k, str(out / "results")) for k in range(3)]
        result = log_configuration_task.fn(configuration, inputs, folds, exp, parent, str(out / "results"))
    n = len(manifest)
    data = Dataset(name, "folders", inputs.manifest, "", "", "", "d", n, n, SR, 5.0, 5.0)
    reg = register_task.fn(result, inputs, data, n_jobs=1, experiment_id=exp, parent_id=parent, target_precision=0.9)
    return {"reg": reg, "held": held, "classes": list(classes), "result": result}


def write_recording(path: Path, clips: list[tuple[float, str]], *, seconds: float, rng: np.random.Generator) -> None:
    """A recording at 22,050 Hz: the given clip files placed at their start times over faint noise."""
    y = (0.002 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    for start, clip_path in clips:
        clip = load_audio(clip_path, sr=SR, duration_s=5.0)
        a = int(start * SR)
        y[a : a + len(clip)] += clip[: len(y) - a]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, SR)


@pytest.fixture(scope="module")
def champion(esc10_dir, tmp_path_factory) -> dict:
    return train_tiny_champion(esc10_dir, tmp_path_factory.mktemp("detect-model"))


@pytest.fixture(scope="module")
def recordings(champion, tmp_path_factory) -> dict:
    """Two 40-s recordings at 22,050 Hz with held-out clips at known times over faint noise, one of background
    noise only, and a file that is not audio."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("recordings")
    held = {label: path for path, label in champion["held"]}
    placed = {"site a/morning.wav": [(5.0, "rooster"), (25.0, "crying_baby")], "evening.flac": [(12.0, "dog")]}
    truth = []
    for name, events in placed.items():
        write_recording(folder / name, [(start, held[label]) for start, label in events], seconds=40, rng=rng)
        truth += [{"file": name, "onset": a, "offset": a + 5.0, "label": label} for a, label in events]
    sf.write(folder / "quiet.wav", (0.002 * rng.standard_normal(30 * SR)).astype(np.float32), SR)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    return {"folder": folder, "truth": pd.DataFrame(truth)}


def test_the_champion_carries_calibrated_thresholds(champion):
    from tasks.tracking.pyfunc import load_model

    reg = champion["reg"]
    cfg = load_model(reg.uri).unwrap_python_model().config
    assert set(cfg["thresholds"]) == set(champion["classes"]) and cfg["target_precision"] == 0.9
    proba = np.load(champion["result"].proba)
    assert all(0 < t <= 1 or t == float("inf") for t in cfg["thresholds"].values())
    assert min(cfg["thresholds"].values()) >= np.nanmin(proba)  # thresholds are observed out-of-fold scores
    arts = {a.path for a in MlflowClient(config.tracking_uri()).list_artifacts(reg.run_id)}
    assert {"thresholds.csv", "thresholds_pr.png"} <= arts


def test_detect_writes_four_outputs_resumes_and_reports_a_bad_file(champion, recordings, prefect_harness, tmp_path):
    from flows.cli import main

    folder, out = recordings["folder"], tmp_path / "out"
    args = ["detect", str(folder), "--recursive", "--model", MODEL, "--out", str(out), "--n-jobs", "2", "--json"]
    model_name = champion["reg"].name
    args[args.index(MODEL)] = model_name
    assert main(args) == 0

    detections = pd.read_csv(out / "detections.csv")
    assert list(detections.columns) == ["file", "start_s", "end_s", "label", "score"]
    assert set(detections["file"]) <= {str(folder / "site a/morning.wav"), str(folder / "evening.flac")}
    assert not (detections["file"] == str(folder / "quiet.wav")).any()  # background only: nothing detected
    raven = read_raven(out / "site a" / "morning.selections.txt")
    audacity = read_audacity(out / "site a" / "morning.txt")
    mine = detections[detections["file"] == str(folder / "site a/morning.wav")]
    assert len(raven) == len(audacity) == len(mine)
    np.testing.assert_allclose(raven[["onset", "offset"]].to_numpy(), mine[["start_s", "end_s"]].to_numpy(), atol=1e-6)
    assert (out / "quiet.selections.txt").read_text().startswith("Selection\tView\tChannel\tBegin Time (s)")
    # the inserted clips are found with their own labels where they were placed (a model of 80 clips misses the
    # rooster: 1.5 s of crowing in its windows scores 0.28-0.36, under its threshold), and nothing else is
    truth, found = recordings["truth"], 0
    for row in truth.itertuples():
        hit = (
            (detections["file"] == str(folder / row.file))
            & (detections["label"] == row.label)
            & (detections["start_s"] < row.offset)
            & (detections["end_s"] > row.onset)
        )
        found += int(hit.any())
    assert found >= 2, detections
    for d in detections.itertuples():  # a clip's barks or cries may be several events: each lies on its clip
        placed_here = truth[(truth["file"].map(lambda f: str(folder / f)) == d.file) & (truth["label"] == d.label)]
        assert ((placed_here["onset"] < d.end_s) & (placed_here["offset"] > d.start_s)).any(), (d, truth)

    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 4 and [j["status"] for j in journal].count("error") == 1
    assert next(j for j in journal if j["status"] == "error")["file"].endswith("broken.wav")
    run = MlflowClient(config.tracking_uri()).search_runs(
        [MlflowClient(config.tracking_uri()).get_experiment_by_name("soundflow-detect").experiment_id],
        order_by=["attribute.start_time DESC"],
    )[0]
    assert run.data.params["model_version"] == champion["reg"].version and run.info.status == "FINISHED"
    assert run.data.metrics["n_files"] == 4 and run.data.metrics["n_failed"] == 1
    arts = {a.path for a in MlflowClient(config.tracking_uri()).list_artifacts(run.info.run_id, "detections")}
    assert arts == {"detections/detections.csv", "detections/tables.zip"}
    import zipfile

    with zipfile.ZipFile(out / "tables.zip") as archive:
        assert "site a/morning.selections.txt" in archive.namelist() and len(archive.namelist()) == 2 * 3

    again = tmp_path / "again.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    again.write_text(buf.getvalue())
    second = json.loads(buf.getvalue()[buf.getvalue().index("{") :])
    assert second["n_scored"] == 1 and second["n_skipped"] == 3  # only the broken file is tried again
    assert pd.read_csv(out / "detections.csv").equals(detections)


def test_evaluate_detections_on_hand_made_tables(tmp_path, capsys):
    from flows.cli import main

    det = pd.DataFrame(
        {
            "file": ["/x/a.wav", "/x/a.wav"],
            "start_s": [0.1, 5.0],
            "end_s": [2.5, 6.0],
            "label": ["dog", "cat"],
            "score": 0.9,
        }
    )
    det.to_csv(tmp_path / "detections.csv", index=False)
    pd.DataFrame({"path": ["a.wav"], "onset": [0.0], "offset": [3.0], "label": ["dog"]}).to_csv(
        tmp_path / "ref.csv", index=False
    )
    assert main(["evaluate-detections", str(tmp_path / "detections.csv"), str(tmp_path / "ref.csv"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    seg, ev = figures["segment"], figures["event"]
    # segments 0-1, 1-2, 2-3 of dog are active in both (TP 3); cat at 5-6 is a false positive (FP 1)
    assert (seg["tp"], seg["fp"], seg["fn"]) == (3, 1, 0) and seg["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))
    # event: dog onset 0.1 s is within the 200-ms collar; cat is an insertion
    assert (ev["tp"], ev["fp"], ev["fn"]) == (1, 1, 0)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_scheduled_detection_analyses_only_the_recordings_added_since_its_last_run(servers, esc10_dir):
    """`soundflow serve-detect --watch DIR` on a real Prefect server and MLflow server, every minute: the first run
    analyses the one recording there; a recording added afterwards is the only one the next run analyses."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.flows.test_serve import ROOT, _finished_flow_runs, _stop

    env, tmp = servers["env"], servers["tmp"]
    saved = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = servers["mlflow"]  # the champion goes to the server's registry
    try:
        (tmp / "model").mkdir()
        champion = train_tiny_champion(esc10_dir, tmp / "model", name="served-detect")
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    held = {label: path for path, label in champion["held"]}
    watch, out, rng = tmp / "incoming", tmp / "detections", np.random.default_rng(3)
    write_recording(watch / "first.wav", [(3.0, held["dog"])], seconds=20, rng=rng)
    log = tmp / "serve-detect.log"
    cmd = [sys.executable, "-m", "flows.cli", "serve-detect", "--watch", str(watch), "--cron", "* * * * *"]
    cmd += ["--model", champion["reg"].name, "--out", str(out), "--n-jobs", "1", "--name", "every-minute"]
    serve = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    by_deployment = DeploymentFilter(name=DeploymentFilterName(any_=["every-minute"]))

    def completed(n: int) -> list:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert serve.poll() is None, log.read_text()[-5000:]
            runs = _finished_flow_runs(servers["prefect_api"], deployment_filter=by_deployment)
            assert not [r for r in runs if not r.state.is_completed()], log.read_text()[-5000:]
            if len(runs) >= n:
                return runs
            time.sleep(5)
        raise AssertionError(f"fewer than {n} completed runs in time:\n{log.read_text()[-5000:]}")

    try:
        completed(1)
        lines = (out / "journal.jsonl").read_text().splitlines()
        assert [json.loads(line)["file"] for line in lines] == [str(watch / "first.wav")]
        write_recording(watch / "second.wav", [(8.0, held["rooster"])], seconds=20, rng=rng)
        completed(2)
        deadline = time.monotonic() + 300  # a run that began before the file arrived may have analysed nothing
        while len((out / "journal.jsonl").read_text().splitlines()) < 2 and time.monotonic() < deadline:
            completed(len(_finished_flow_runs(servers["prefect_api"], deployment_filter=by_deployment)) + 1)
    finally:
        _stop(serve, signal.SIGINT)
    entries = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert [e["file"] for e in entries] == [str(watch / "first.wav"), str(watch / "second.wav")]  # each once
    client = MlflowClient(servers["mlflow"])
    runs = client.search_runs([client.get_experiment_by_name("soundflow-detect").experiment_id])
    scored = sorted(int(r.data.metrics["n_scored"]) for r in runs)
    assert scored.count(1) == 2 and set(scored) <= {0, 1}  # first.wav once, second.wav once, nothing twice
    assert all(r.data.params["model_name"] == champion["reg"].name for r in runs)
