"""report/index.html: its sections, embedded images that decode, and numbers that match the results."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks import config
from tasks.data.manifest import write_manifest, write_rejected
from tasks.records import Config, ConfigResult, Dataset, EnsembleResult, RunSummary
from tasks.tracking import runs as tracking
from tasks.tracking.html_report import book_figure, html_report_task

CLASSES = ["rain", "rooster", "dog"]


@pytest.fixture
def run_inputs(tmp_path, rng):
    """A 3-class, 3-fold manifest, its splits, two models' and one ensemble's probabilities, curves, a rejected file."""
    n = 30
    y = np.arange(n) % 3
    fold = np.arange(n) // 10 + 1
    manifest = pd.DataFrame(
        {
            "recording_id": [f"{i}.wav" for i in range(n)],
            "path": [f"/data/{i}.wav" for i in range(n)],
            "filename": [f"{i}.wav" for i in range(n)],
            "start_s": 0.0,
            "duration_s": 5.0,
            "label": [CLASSES[c] for c in y],
            "class_id": y,
            "source_class_id": "",
            "fold": fold,
            "group": [str(i) for i in range(n)],
            "content_hash": [f"h{i}" for i in range(n)],
            "sample_rate": 44100,
            "channels": 1,
            "recording_duration_s": 5.0,
            "loudness_db": -20.0,
        }
    )
    write_manifest(tmp_path / "manifest.csv", manifest)
    write_rejected(
        tmp_path / "rejected.csv",
        [{"path": "/data/broken.wav", "filename": "broken.wav", "label": "dog", "reason": "truncated: 0 samples"}],
    )
    splits = [
        {"train": np.flatnonzero(fold != f).tolist(), "test": np.flatnonzero(fold == f).tolist()} for f in (1, 2, 3)
    ]
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    results = []
    for name, family, noise in (
        ("rf1000/raw", "classical", 2.0),
        ("cnn2d_logmel/logmel", "cnn2d", 0.5),
        ("ensemble:average", "ensemble", 0.3),
    ):
        proba = np.eye(3)[y] + noise * rng.random((n, 3))
        proba /= proba.sum(axis=1, keepdims=True)
        path = tmp_path / f"{name.replace('/', '_').replace(':', '_')}.npy"
        np.save(path, proba)
        acc = [float(np.mean(proba[np.array(s["test"])].argmax(1) == y[np.array(s["test"])])) for s in splits]
        hist = None
        if family == "cnn2d":
            hist = tmp_path / "history.json"
            hist.write_text(json.dumps([{"loss": [2.0, 1.5, 1.0], "accuracy": [0.3, 0.5, 0.7]} for _ in splits]))
        scores = {
            "run_id": "x",
            "proba": str(path),
            "cv_accuracy_mean": float(np.mean(acc)),
            "cv_accuracy_sem": float(np.std(acc, ddof=1) / np.sqrt(3)),
            "macro_f1_mean": 0.5,
            "history": str(hist) if hist else None,
        }
        if family == "ensemble":
            members = tuple(results)
            group, combiner = name.split(":")
            members_names = tuple(m.name for m in members)
            results.append(EnsembleResult(group, combiner, "jaya", 0, members_names, members, **scores))
        else:
            model, features = name.split("/")
            results.append(ConfigResult(Config(model, features, family), **scores))
    data = Dataset(
        "esc10",
        "esc10",
        str(tmp_path / "manifest.csv"),
        "",
        str(tmp_path / "rejected.csv"),
        "",
        "d",
        n,
        n,
        22050,
        5.0,
        5.0,
    )
    return results, data, str(tmp_path / "splits.json")


def _summary(results, dataset: str, parent: str) -> RunSummary:
    return RunSummary(
        dataset=dataset,
        source="/data",
        preset="smoke",
        n_clips=30,
        n_recordings=30,
        protocol="3 folds",
        results=tuple(results),
        experiment_id="0",
        parent_run_id=parent,
        tracking_uri=config.tracking_uri(),
        run_url="",
        registered_model=f"soundflow-{dataset}",
        seconds=12.0,
    )


def test_book_figures_are_matched_by_configuration():
    def single(model, features, augmented=False, family="classical"):
        return ConfigResult(Config(model, features, family, augmented=augmented), "r", "p.npy", 0.5, 0.0, 0.5)

    def ensemble(combiner):
        return EnsembleResult("ensemble", combiner, "jaya", 0, (), (), "r", "p.npy", 0.5, 0.0, 0.5)

    assert book_figure(single("rf1000", "raw")) == 34.4 and book_figure(single("rf1000", "raw", True)) == 34.4
    assert book_figure(single("cnn1d_deep1_k7", "raw", family="cnn1d")) == 50.50
    assert book_figure(ensemble("weighted")) == 81.06 and book_figure(ensemble("stacking")) is None
    assert book_figure(single("rf1000", "engineered")) is None
    assert book_figure(single("cnn2d_logmel", "logmel", family="cnn2d")) is None


def test_report_has_every_section_decodable_images_and_the_results_numbers(run_inputs, tmp_path):
    results, data, splits = run_inputs
    exp = tracking.ensure_experiment("test-html-report")
    parent = tracking.start_run(exp, name="case-study test")
    path = html_report_task.fn(data, splits, _summary(results, "esc10", parent), str(tmp_path / "reports"))
    page = open(path, encoding="utf-8").read()

    for section in ("results", "comparison", "confusion", "recall", "curves", "dataset", "rejected"):
        assert f"id='{section}'" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1 + 2 + 1  # comparison, best model + best ensemble, one deep model's curves
    assert all(base64.b64decode(img).startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    rows = {
        re.sub(r"<.*?>", "", row.split("</td>")[0]).strip(): row for row in re.findall(r"<tr>(.*?)</tr>", page, re.S)
    }
    for r in results:
        assert f"{100 * r.cv_accuracy_mean:.1f} ± {100 * r.cv_accuracy_sem:.1f}" in rows[r.name]
    assert "34.4" in rows["rf1000/raw"] and "78.9" in rows["ensemble:average"]
    assert "/data/broken.wav" in page and "truncated: 0 samples" in page and "Rejected files (1)" in page
    best = max((r for r in results if r.family != "ensemble"), key=lambda r: r.cv_accuracy_mean)
    assert f"best model: {best.name}" in page and "best ensemble: ensemble:average" in page
    arts = {a.path for a in MlflowClient(config.tracking_uri()).list_artifacts(parent, "report")}
    assert "report/index.html" in arts


@pytest.mark.parametrize("dataset", ["esc10", "my_sounds"])
def test_book_figures_only_in_an_esc10_report(run_inputs, tmp_path, dataset):
    results, data, splits = run_inputs
    parent = tracking.start_run(tracking.ensure_experiment("test-html-report"), name=f"report {dataset}")
    summary = _summary(results, dataset, parent)
    page = open(html_report_task.fn(data, splits, summary, str(tmp_path / "reports")), encoding="utf-8").read()
    header = re.search(r"<thead>(.*?)</thead>", page, re.S).group(1)
    esc10 = dataset == "esc10"
    assert ("book (%)" in header) is esc10 and ("Kneusel" in page) is esc10
    assert ("<td>34.4</td>" in page) is esc10  # rf1000/raw's figure in the book
