"""Per-class thresholds on a six-window example worked out by hand (ties, a dip in precision, an unreachable target)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from tasks.detection.thresholds import calibrate, pr_curve, pr_figure
from tasks.errors import DatasetError

CLASSES = ["0", "dog bark", "café"]
Y = np.array([0, 0, 1, 2, 1, 2])
# Descending, with precision when each distinct score is the threshold (scores >= t flagged):
# "0" (rows 0, 1):        0.9 -> 1/1; 0.6 (rows 1, 2, 3 tie) -> 2/4; 0.3 -> 2/5; 0.1 -> 2/6
# "dog bark" (rows 2, 4): 0.9 -> 0/1; 0.8 -> 1/2; 0.7 -> 1/3; 0.6 -> 2/4; 0.2 -> 2/5; 0.1 -> 2/6
# "café" (rows 3, 5):     0.9 -> 1/1; 0.8 -> 1/2; 0.7 -> 2/3; 0.4 -> 2/4; 0.3 -> 2/5; 0.2 -> 2/6
SCORES = np.array(
    [
        [0.9, 0.9, 0.8],
        [0.6, 0.7, 0.4],
        [0.6, 0.8, 0.3],
        [0.6, 0.2, 0.9],
        [0.1, 0.6, 0.2],
        [0.3, 0.1, 0.7],
    ]
)


def test_pr_curve_counts_tied_scores_together():
    thr, prec, rec = pr_curve(SCORES[:, 0], Y == 0)
    assert thr.tolist() == [0.9, 0.6, 0.3, 0.1]
    assert prec.tolist() == pytest.approx([1, 2 / 4, 2 / 5, 2 / 6])
    assert rec.tolist() == pytest.approx([0.5, 1, 1, 1])


def test_calibrate_by_hand_at_target_0_6():
    table = calibrate(SCORES, Y, CLASSES, target_precision=0.6)
    assert table["label"].tolist() == CLASSES
    # "0": only 0.9 reaches 0.6; taking half of the 0.6 tie (its positive first) would wrongly give 2/2 at 0.6
    # "dog bark": never reaches; best precision 1/2 at 0.8 and at 0.6 -> the lower, 0.6
    # "café": 0.7 reaches (2/3) although 0.8 above it does not (1/2): the lowest, not the first from the top
    assert table["threshold"].tolist() == [0.9, 0.6, 0.7]
    assert table["precision"].tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    assert table["recall"].tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert table["support"].tolist() == [2, 2, 2]
    assert table["reached"].tolist() == [True, False, True]
    assert table["note"].iloc[0] == "" and "not reached" in table["note"].iloc[1]


def test_precision_equal_to_target_counts_as_reached():
    table = calibrate(SCORES, Y, CLASSES, target_precision=0.5)
    assert table.set_index("label").loc["0", "threshold"] == 0.6  # precision exactly 2/4 at the tie
    assert table["reached"].all()


def test_ignored_classes_get_no_row_and_classes_without_windows_are_never_detected():
    names = [*CLASSES, "siren"]
    scores = np.c_[SCORES, np.full(len(Y), 0.5)]
    table = calibrate(scores, Y, names, ignore=["dog bark"])
    assert table["label"].tolist() == ["0", "café", "siren"]
    siren = table.set_index("label").loc["siren"]
    assert siren["threshold"] == np.inf and not siren["reached"] and siren["support"] == 0


def test_calibrate_names_the_bad_row():
    with pytest.raises(DatasetError, match=r"y row 4: class id 3 is not in 0..2"):
        calibrate(SCORES, np.array([0, 0, 1, 2, 3, 2]), CLASSES)
    bad = SCORES.copy()
    bad[1, 1] = np.nan
    with pytest.raises(DatasetError, match=r"scores row 1: score of class 'dog bark' is nan"):
        calibrate(bad, Y, CLASSES)
    with pytest.raises(DatasetError, match=r"expected \(n_windows, 2\)"):
        calibrate(SCORES, Y, CLASSES[:2])


@pytest.mark.parametrize("target", [0.0, 1.5])
def test_calibrate_rejects_targets_outside_0_1(target):
    with pytest.raises(ValueError):
        calibrate(SCORES, Y, CLASSES, target_precision=target)


def test_pr_figure_has_one_panel_per_class_with_the_chosen_point():
    table = calibrate(SCORES, Y, CLASSES, target_precision=0.6)
    fig = pr_figure(SCORES, Y, CLASSES, table)
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["0: t=0.9", "dog bark: t=0.6", "café: t=0.7"]
    chosen = np.array([ax.lines[-1].get_xydata()[0] for ax in panels])
    np.testing.assert_allclose(chosen, [(0.5, 1.0), (1.0, 0.5), (1.0, 2 / 3)])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
