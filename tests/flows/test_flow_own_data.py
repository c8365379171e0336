"""The case-study flow on a generated non-ESC dataset: a CSV manifest, digit class names, long recordings
cut into windows, per-recording scores, a registered champion that predicts a new long file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mlflow import MlflowClient

from flows.params import CaseStudyParams
from tasks import config

SR = 16000
CLASSES = {"0": (300.0, 0.0), "1": (1200.0, 0.0), "2": (0.0, 1.0)}  # low tone, high tone, noise


def _recording(kind: str, duration_s: float, rng: np.random.Generator, *, sr: int = SR) -> np.ndarray:
    freq, noise = CLASSES[kind]
    t = np.arange(round(sr * duration_s)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.05 * rng.standard_normal()) * t) if freq else 0 * t
    return (y + (0.2 * noise + 0.01) * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def own_dataset(tmp_path_factory) -> Path:
    """4 recordings per class of 2.2-3.5 s (3 windows of 1 s each), at odd rates, some stereo; a CSV manifest."""
    root = tmp_path_factory.mktemp("own") / "birdsong"
    rng = np.random.default_rng(3)
    lines = ["path,label"]
    for kind in CLASSES:
        for i in range(4):
            sr = int(rng.choice([16000, 22050, 11025]))
            y = _recording(kind, rng.uniform(2.2, 3.5), rng, sr=sr)
            y = np.stack([y, y], axis=1) if i % 2 else y
            path = root / "audio" / f"class {kind}" / f"rec{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, y, sr)
            lines.append(f"audio/class {kind}/rec{i}.wav,{kind}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def _params(source, **kw) -> CaseStudyParams:
    return CaseStudyParams(
        source=str(source),
        window_s=1.0,
        sample_rate=SR,
        k=2,
        features=["engineered"],
        models=["logreg", "gaussian_nb"],
        ensembles=["average"],
        ensemble_members=2,
        ensemble_pools={"vectors": ["*/engineered"]},
        **kw,
    )


@pytest.fixture(scope="module")
def own_run(prefect_harness, own_dataset):
    from flows.case_study import case_study

    return case_study(_params(own_dataset, register_champion=True))


def test_runs_are_named_per_dataset_and_scored_per_recording(own_run):
    c = MlflowClient(config.tracking_uri())
    parent = c.get_run(own_run.parent_run_id)
    assert c.get_experiment(parent.info.experiment_id).name == "soundflow-labels"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["soundflow.layout"] == "csv" and parent.data.tags["soundflow.recordings"] == "12"
    assert parent.data.tags["soundflow.groups"].startswith("none")  # the run says it had no groups
    assert "dataset/summary.md" in {a.path for a in c.list_artifacts(parent.info.run_id, "dataset")}
    assert {"audit/summary.md", "audit/duplicates.csv"} <= {
        a.path for a in c.list_artifacts(parent.info.run_id, "audit")
    }
    assert parent.data.tags["soundflow.audit.verdict"] and "soundflow.audit.gap_points" in parent.data.tags
    children = c.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    model_runs = [r for r in children if r.data.tags.get("soundflow.kind") == "model"]
    assert {r.info.run_name for r in model_runs} == {"logreg/engineered", "gaussian_nb/engineered"}
    for r in model_runs:
        assert r.info.status == "FINISHED"
        assert {"cv_accuracy_mean", "segment_accuracy_mean", "recall_0", "recall_1", "recall_2"} <= set(r.data.metrics)
    ensemble_runs = {r.info.run_name for r in children if r.data.tags.get("soundflow.kind") == "ensemble"}
    assert ensemble_runs == {"ensemble:average", "vectors:average"}  # the mixed one and the named pool's
    logreg = next(r for r in model_runs if r.info.run_name == "logreg/engineered")
    assert logreg.data.metrics["cv_accuracy_mean"] >= 0.9  # tones vs noise: easy, per recording


def test_champion_predicts_a_new_long_file(own_run, tmp_path):
    from flows.predict import predict

    assert own_run.champion.name == "soundflow-labels"
    rng = np.random.default_rng(99)
    files = []
    for kind in ("1", "2"):
        y = np.concatenate(
            [np.zeros(3 * 8000, np.float32), _recording(kind, 2.0, rng, sr=8000), np.zeros(4 * 8000, np.float32)]
        )  # 9 s at 8 kHz: mostly silence
        files.append(tmp_path / f"new_{kind}.wav")
        sf.write(files[-1], y, 8000)
    rows = predict(files=[str(f) for f in files], model_name="soundflow-labels")
    assert [r["label"] for r in rows] == ["1", "2"]
    assert all(r["n_windows"] == 9 for r in rows)
    assert all("below the model's 16000 Hz" in r["warning"] for r in rows)


def test_no_reuse_results_retrains_every_fold(own_run, own_dataset):
    from flows.case_study import case_study

    again = case_study(_params(own_dataset, register_champion=False, reuse_results=False))
    c = MlflowClient(config.tracking_uri())
    exp = c.get_run(again.parent_run_id).info.experiment_id
    runs = c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{again.parent_run_id}'")
    models = [r for r in runs if r.data.tags.get("soundflow.kind") == "model"]
    assert models and not [r for r in models if r.data.tags.get("soundflow.reused") == "true"]
    assert again.accuracies() == own_run.accuracies()  # retrained with the same seed: the same numbers
