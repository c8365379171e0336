"""bench/scale.py's generated dataset (readable files with a learnable class structure) and its summary figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

_SPEC = importlib.util.spec_from_file_location("bench_scale", Path(__file__).parents[2] / "bench" / "scale.py")
scale = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(scale)


def _band_levels(y: np.ndarray) -> np.ndarray:
    """Log power in 32 log-spaced bands (100 Hz to 8 kHz) over 0.25-s frames: mean and std per band."""
    frames = y[: len(y) // 4000 * 4000].reshape(-1, 4000)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.searchsorted(np.fft.rfftfreq(4000, 1 / scale.SR), np.geomspace(100, 8000, 33))
    bands = np.log(
        np.stack([power[:, a : max(b, a + 1)].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])], 1) + 1e-12
    )
    bands -= bands.mean()  # the random gain carries no class information
    return np.concatenate([bands.mean(axis=0), bands.std(axis=0)])


def test_recording_is_seeded_and_in_range():
    a, b = scale.recording(3, 7), scale.recording(3, 7)
    assert a.dtype == np.float32 and a.shape == (round(scale.SR * scale.RECORDING_S),)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, scale.recording(3, 8))
    assert 0 < np.abs(a).max() <= 1.0


def test_generated_files_are_readable_and_learnable(tmp_path):
    paths = scale.write_dataset(tmp_path, 80, n_jobs=1)
    assert len(paths) == 80 and all(p.is_file() for p in paths)
    labels = np.array([int(p.parent.name.split()[-1]) for p in paths])
    assert np.bincount(labels).tolist() == [8] * scale.N_CLASSES
    feats = []
    for p in paths:
        y, sr = sf.read(p, dtype="float32")
        assert sr == scale.SR and len(y) == round(scale.SR * scale.RECORDING_S)
        feats.append(_band_levels(y))
    X = np.array(feats)
    index = np.array([int(p.stem[3:]) for p in paths])
    test = index >= 60  # the last two recordings of each class
    mean, std = X[~test].mean(axis=0), X[~test].std(axis=0) + 1e-9
    Z = (X - mean) / std
    centroids = np.stack([Z[~test & (labels == c)].mean(axis=0) for c in range(scale.N_CLASSES)])
    pred = np.argmin(((Z[test][:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float((pred == labels[test]).mean())
    assert accuracy >= 0.4, f"nearest centroid on band levels: {accuracy:.2f} (chance 0.1)"


def _result(n: int, stage: str, wall_s: float, rss_mb: float) -> dict:
    extra = {"best_model": "logreg", "best_accuracy": 0.8} if stage == "cv_classical" else {}
    return {"n": n, "stage": stage, "wall_s": wall_s, "rss_mb": rss_mb, "anon_mb": rss_mb / 2, **extra}


def test_summary_growth_and_throughput():
    results = []
    for n, scale_wall, rss in ((4000, 1.0, 500.0), (40000, 12.5, 750.0)):
        results += [
            _result(n, s, scale_wall * (i + 1), rss * (1 + (s == "ingest"))) for i, s in enumerate(scale.PIPELINE)
        ]
    out = scale.summary(results, [4000, 40000])
    assert out["rss_growth_4k_to_40k"] == pytest.approx(1500.0 / 1000.0)
    assert out["rss_growth_4k_to_40k_features_logmel"] == pytest.approx(1.5)
    assert out["anon_growth_4k_to_40k"] == pytest.approx(1.5)
    assert out["throughput_ratio_40k_vs_4k"] == pytest.approx(10 / 12.5)
    assert out["failed_stages"] == 0 and out["accuracy_40000"] == 0.8


def test_summary_leaves_out_failed_stages():
    results = [_result(n, s, 1.0, 100.0) for n in (4000, 40000) for s in scale.PIPELINE]
    results[-1] = {"n": 40000, "stage": "cv_classical", "error": "exit 1"}
    out = scale.summary(results, [4000, 40000])
    assert "rss_growth_4k_to_40k" not in out and "throughput_ratio_40k_vs_4k" not in out
    assert out["rss_growth_4k_to_40k_ingest"] == pytest.approx(1.0)
    assert out["failed_stages"] == 1


def test_failed_stage_reports_its_stderr(tmp_path):
    res = scale.run_stage("features_logmel", 400, tmp_path, {}, tmp_path)
    assert res["stage"] == "features_logmel" and "exit 1" in res["error"]
    assert "run the ingest stage first" in res["error"]
