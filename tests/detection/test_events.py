"""Window thresholds and event merging on tiny tables whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.detection.events import EVENT_COLUMNS, class_columns, merge_events, window_detections
from tasks.errors import DatasetError, SoundflowError

CLASSES = ["0", "dog bark", "café"]


@pytest.fixture
def scores() -> pd.DataFrame:
    """Two recordings; a.wav has three 2-s windows hopping 1 s, the last one padded."""
    return pd.DataFrame(
        {
            "file": ["a.wav", "a.wav", "a.wav", "b.wav"],
            "start_s": [0.0, 1.0, 2.0, 0.0],
            "end_s": [2.0, 3.0, 4.0, 2.0],
            "0": [0.9, 0.5, 0.1, 0.2],
            "dog bark": [0.1, 0.6, 0.7, 0.3],
            "café": [0.0, 0.3, 0.2, 0.4],
            "loudness_db": [-20.0, -25.0, -30.0, -12.0],
            "partial": [False, False, True, False],
        }
    )


def _events(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def test_class_columns_are_the_unreserved_columns_in_order(scores):
    assert class_columns(scores) == CLASSES


def test_window_detections_one_row_per_window_and_class_at_or_above_threshold(scores):
    got = window_detections(scores, {"0": 0.5, "dog bark": 0.6, "café": 0.9})
    want = _events(
        [
            ("a.wav", 0.0, 2.0, "0", 0.9),
            ("a.wav", 1.0, 3.0, "0", 0.5),  # score == threshold counts
            ("a.wav", 1.0, 3.0, "dog bark", 0.6),
            ("a.wav", 2.0, 4.0, "dog bark", 0.7),
        ]
    )
    pd.testing.assert_frame_equal(got, want)


def test_window_detections_has_no_top_class_fallback_and_skips_ignored_classes(scores):
    got = window_detections(scores, {"0": 0.95, "dog bark": 0.65}, ignore=["café"])
    assert got[["file", "start_s", "label"]].values.tolist() == [["a.wav", 2.0, "dog bark"]]
    assert "b.wav" not in set(got["file"])  # b.wav passes no threshold: nothing, not its best class


def test_window_detections_nan_scores_never_pass(scores):
    scores.loc[0, "0"] = np.nan
    got = window_detections(scores, {c: 0.0 for c in CLASSES})
    assert len(got) == 4 * 3 - 1


def test_window_detections_empty_result_keeps_columns(scores):
    got = window_detections(scores, {c: 2.0 for c in CLASSES})
    assert list(got.columns) == EVENT_COLUMNS and got.empty


def test_window_detections_missing_threshold_names_the_class(scores):
    with pytest.raises(DatasetError, match=r"no threshold for class\(es\) \['café'\]"):
        window_detections(scores, {"0": 0.5, "dog bark": 0.5})


def test_window_detections_non_numeric_score_names_row_and_file(scores):
    scores["dog bark"] = scores["dog bark"].astype(object)
    scores.loc[2, "dog bark"] = "high"
    with pytest.raises(SoundflowError, match=r"row 2 \(file 'a.wav'.*class 'dog bark' is 'high'"):
        window_detections(scores, {c: 0.5 for c in CLASSES})


def test_merge_overlapping_windows_into_one_event_with_mean_or_max():
    windows = _events(
        [
            ("a.wav", 0.0, 2.0, "dog bark", 0.6),
            ("a.wav", 1.0, 3.0, "dog bark", 0.8),
            ("a.wav", 5.0, 7.0, "dog bark", 0.9),
        ]
    )
    by_max = merge_events(windows)
    assert by_max[["start_s", "end_s", "score"]].values.tolist() == [[0.0, 3.0, 0.8], [5.0, 7.0, 0.9]]
    by_mean = merge_events(windows, score="mean")
    assert by_mean["score"].tolist() == pytest.approx([0.7, 0.9])
    assert list(by_mean.columns) == EVENT_COLUMNS


@pytest.mark.parametrize("merge_gap_s, n_events", [(0.5, 1), (0.4, 2), (0.0, 2)])
def test_merge_gap_of_half_a_second(merge_gap_s, n_events):
    windows = _events(
        [("a.wav", 0.1, 0.6, "0", 0.5), ("a.wav", 1.1, 3.3, "0", 0.7)]
    )  # a 0.5-s gap that computes as 0.5000000000000001
    got = merge_events(windows, merge_gap_s=merge_gap_s)
    assert len(got) == n_events
    if n_events == 1:
        assert got[["start_s", "end_s", "score"]].values.tolist() == [[0.1, 3.3, 0.7]]


def test_merge_touching_windows_at_zero_gap_and_a_long_window_covers_later_ones():
    windows = _events(
        [
            ("a.wav", 0.0, 5.0, "café", 0.5),
            ("a.wav", 1.0, 2.0, "café", 0.9),
            ("a.wav", 3.0, 4.0, "café", 0.4),  # inside the first window, after the second ended
            ("a.wav", 5.0, 6.0, "café", 0.3),  # touches the first window's end
        ]
    )
    got = merge_events(windows)
    assert got[["start_s", "end_s", "score"]].values.tolist() == [[0.0, 6.0, 0.9]]


def test_merge_keeps_files_and_labels_apart_and_sorts_by_file_start_label():
    windows = _events(
        [
            ("b.wav", 0.0, 1.0, "0", 0.5),
            ("a.wav", 1.0, 2.0, "dog bark", 0.6),
            ("a.wav", 1.0, 2.0, "0", 0.7),
            ("a.wav", 0.0, 1.5, "café", 0.8),
        ]
    )
    got = merge_events(windows, merge_gap_s=10.0)
    assert got[["file", "start_s", "label"]].values.tolist() == [
        ["a.wav", 0.0, "café"],
        ["a.wav", 1.0, "0"],
        ["a.wav", 1.0, "dog bark"],
        ["b.wav", 0.0, "0"],
    ]


def test_merge_of_no_detections_is_empty_with_columns():
    got = merge_events(_events([]))
    assert got.empty and list(got.columns) == EVENT_COLUMNS


@pytest.mark.parametrize("kwargs", [{"score": "median"}, {"merge_gap_s": -0.1}, {"merge_gap_s": float("nan")}])
def test_merge_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        merge_events(_events([("a.wav", 0.0, 1.0, "0", 0.5)]), **kwargs)


def test_merge_names_missing_columns():
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['score'\]"):
        merge_events(pd.DataFrame({"file": ["a"], "start_s": [0.0], "end_s": [1.0], "label": ["0"]}))
