"""Windows, their loudness votes, and per-recording pooling, with answers known in advance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.data.manifest import validate
from tasks.data.windows import cut, loudness_db, pool, vote_weights, window_starts
from tasks.errors import DatasetError
from tasks.evaluation.metrics import cv_summary


@pytest.mark.parametrize(
    "n, window, hop, expected",
    [
        (50, 100, 100, [0]),  # short: one zero-padded window
        (140, 100, 100, [0]),  # barely longer (within half a hop): one trimmed window
        (151, 100, 100, [0, 51]),  # longer: a second window aligned to the end
        (300, 100, 100, [0, 100, 200]),  # exact fit
        (330, 100, 50, [0, 50, 100, 150, 200, 230]),
        (125, 100, 50, [0]),  # the served model's half-window hop: up to a quarter window more is one
        (130, 100, 50, [0, 30]),
        (250, 100, 50, [0, 50, 100, 150]),
    ],
)
def test_window_starts(n, window, hop, expected):
    assert window_starts(n, window=window, hop=hop) == expected


def test_cut_pads_and_keeps_samples():
    y = np.arange(1, 251, dtype=np.float32)
    w, starts = cut(y, window=100, hop=100)
    assert starts == [0, 100, 150] and w.shape == (3, 100)
    np.testing.assert_array_equal(w[2], y[150:250])
    short, _ = cut(y[:30], window=100, hop=100)
    assert short.shape == (1, 100) and (short[0, 30:] == 0).all()


def test_silence_does_not_outvote_the_sound():
    """A 45-s file holding one 5-s call in silence: 8 near-silent windows say 'dog', the call says 'rooster'."""
    rng = np.random.default_rng(0)
    windows = 1e-4 * rng.standard_normal((9, 1000)).astype(np.float32)
    windows[4] += 0.3 * np.sin(np.arange(1000) / 3).astype(np.float32)
    proba = np.tile([0.7, 0.3], (9, 1))  # silence looks like 'dog' to the model
    proba[4] = [0.05, 0.95]  # the call: 'rooster'
    owner = np.zeros(9)
    _, plain = pool(proba, owner)
    _, voted = pool(proba, owner, vote_weights(loudness_db(windows), owner))
    assert plain[0].argmax() == 0 and voted[0].argmax() == 1


def test_per_recording_accuracy_has_a_known_answer():
    # recording r0: 3 windows, 2 right; r1: 2 windows, 1 right but the wrong one is near-silent; r2: 1 wrong
    y = np.array([0, 0, 0, 1, 1, 1])
    owner = np.array(["r0", "r0", "r0", "r1", "r1", "r2"])
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.3, 0.7], [0.9, 0.1], [0.6, 0.4]])
    level = np.array([-10, -12, -11, -10, -60, -10.0])
    splits = [(np.array([3, 4, 5]), np.array([0, 1, 2])), (np.array([0, 1, 2]), np.array([3, 4, 5]))]
    s = cv_summary(y, proba, splits, ["a", "b"], owner=owner, weights=vote_weights(level, owner))
    assert s["fold_accuracy"] == [1.0, 0.5]  # r0 right; r1 right (silent window ignored), r2 wrong
    assert s["segment_accuracy_mean"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert s["n_recordings_tested"] == 3 and s["confusion"].sum() == 3


def _frame(**over) -> pd.DataFrame:
    rows = {
        "recording_id": ["a.wav", "a.wav", "b.wav"],
        "path": ["/d/a.wav", "/d/a.wav", "/d/b.wav"],
        "filename": ["a.wav", "a.wav", "b.wav"],
        "start_s": [0.0, 5.0, 0.0],
        "duration_s": [5.0, 5.0, 5.0],
        "label": ["x", "x", "y"],
        "class_id": [0, 0, 1],
        "source_class_id": ["", "", ""],
        "fold": [1, 1, 2],
        "group": ["g1", "g1", "g2"],
        "content_hash": ["h1", "h1", "h2"],
        "sample_rate": [8000] * 3,
        "channels": [1] * 3,
        "recording_duration_s": [10.0, 10.0, 5.0],
        "loudness_db": [-20.0] * 3,
    }
    rows.update(over)
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"class_id": [0, 0, 2]}, r"class ids must be 0\.\.1"),
        ({"label": ["x", "x", ""]}, r"row 2 \(/d/b.wav\): empty 'label'"),
        ({"group": ["g1", "g9", "g2"]}, r"recording 'a.wav' has more than one group"),
        ({"fold": [1, 1, None]}, r"row 2 \(/d/b.wav\): fold missing"),
        ({"duration_s": [5.0, 0.0, 5.0]}, r"row 1 \(/d/a.wav\): duration_s must be > 0"),
        ({"label": ["x", "x", "x"]}, r"class ids and labels must map one to one"),
    ],
)
def test_manifest_validation_names_row_and_file(change, message):
    validate(_frame())
    with pytest.raises(DatasetError, match=message):
        validate(_frame(**change), where="m.csv")


@pytest.mark.parametrize(
    "durations, expected",
    [
        ([5.001] * 380 + [3.64, 7.24] * 10, 5.0),  # ESC-10/ESC-50: their 5-s clips
        ([4.0] * 90 + [0.5, 1.0, 2.0, 3.0, 3.5] * 2, 4.0),  # UrbanSound8K: slices of at most 4 s
        (np.linspace(0.1, 2.3, 3000), 2.2),  # spoken digits: the 95th percentile (2.19 s) rounded up
        ([120.0, 3600.0], 5.0),  # long recordings: cut into 5-s windows
        ([0.05, 0.1, 0.2], 0.5),  # clicks: at least half a second
    ],
)
def test_auto_window_follows_the_recordings_lengths(durations, expected):
    from tasks.data.windows import auto_window_s

    window, why = auto_window_s(durations)
    assert window == pytest.approx(expected) and "95th percentile" in why
    assert ("capped" in why) == (np.quantile(durations, 0.95) > 5)


def test_ingestion_with_auto_window_cuts_short_clips_to_their_length(tmp_path):
    """Short clips get a window that fits them, not 5 s of mostly zeros; the window is the ingestion's result."""
    import soundfile as sf

    from tasks.data.ingest import build
    from tasks.data.manifest import read_manifest

    rng = np.random.default_rng(0)
    sr = 8000
    for label, f0 in (("zero", 300.0), ("one", 700.0)):
        for i in range(10):
            dur = 0.3 + 0.07 * i
            t = np.arange(round(sr * dur)) / sr
            y = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.1 * t) * t) + 0.01 * rng.standard_normal(len(t))
            (tmp_path / "digits" / label).mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / "digits" / label / f"s{i % 3}_{i}.wav", y.astype(np.float32), sr)
    data = build(tmp_path / "digits", sr=sr, window_s="auto", out_dir=tmp_path / "out", n_jobs=1)
    assert data.window_s == pytest.approx(1.0) and data.hop_s == pytest.approx(1.0)  # 0.93 s rounded up
    clips = np.load(data.clips)
    assert clips.shape == (20, sr) and len(read_manifest(data.manifest)) == 20
    padding = (clips == 0).mean()
    assert padding < 0.5  # with 5-s windows 87% of every row would be zeros
    again = build(tmp_path / "digits", sr=sr, window_s="auto", out_dir=tmp_path / "out", n_jobs=1)
    assert again.manifest == data.manifest  # the same cache: the window is resolved before the key


def test_frame_levels_are_the_loudest_and_quietest_tenth_of_a_second_and_ignore_padding():
    from tasks.data.windows import frame_levels_db

    sr = 1000
    w = np.full((2, 1000), 0.01, np.float32)  # -40 dBFS throughout
    w[0, 300:400] = 0.1  # one 0.1-s frame at -20 dBFS
    w[1, 500:] = 0.0  # a partial window: zero padding after 0.5 s
    loud, quiet = frame_levels_db(w, sr=sr)
    np.testing.assert_allclose(loud, [-20.0, -40.0], atol=1e-3)
    np.testing.assert_allclose(quiet, [-40.0, -40.0], atol=1e-3)  # the padding is not a silent frame
    assert frame_levels_db(np.zeros((1, 1000), np.float32), sr=sr)[1][0] == -200.0
