"""Segment- and event-based detection metrics: hand-computed examples, edge cases, and sed_eval as a cross-check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tasks.detection.metrics import event_metrics, normalise_events, segment_metrics
from tasks.errors import DatasetError

CLASSES = ["0", "dog bark", "café"]


def _events(*rows: tuple, file: str = "a.wav") -> pd.DataFrame:
    """A table from (onset, offset, label) or (file, onset, offset, label) rows."""
    rows = [r if len(r) == 4 else (file, *r) for r in rows]
    return pd.DataFrame(rows, columns=["file", "onset", "offset", "label"])


NONE = _events()


def test_segment_hand_example_overlapping_estimate_hits_every_segment():
    out = segment_metrics(_events((0.0, 3.0, "dog bark")), _events((0.1, 2.5, "dog bark")))
    assert (out["tp"], out["fp"], out["fn"]) == (3, 0, 0)
    assert out["f1"] == 1.0 and out["error_rate"] == 0.0


def test_segment_hand_example_late_and_long_estimate():
    # reference segments 0,1,2; estimate 1.5-5 covers 1..4: TP {1,2}, FN {0} (deletion), FP {3,4} (insertions)
    out = segment_metrics(_events((0.0, 3.0, "café")), _events((1.5, 5.0, "café")))
    assert (out["tp"], out["fp"], out["fn"]) == (2, 2, 1)
    assert (out["substitutions"], out["deletions"], out["insertions"], out["n_ref"]) == (0, 1, 2, 3)
    assert out["precision"] == pytest.approx(0.5) and out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(4 / 7) and out["error_rate"] == pytest.approx(1.0)


def test_segment_wrong_label_is_a_substitution():
    out = segment_metrics(_events((0.0, 2.0, "0")), _events((0.0, 2.0, "café")))
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (2, 0, 0)
    assert out["f1"] == 0.0 and out["error_rate"] == pytest.approx(1.0)
    assert out["per_class"] == {"0": 0.0, "café": 0.0}


def test_segment_resolution_and_durations():
    ref = _events((0.0, 2.0, "dog bark"))
    assert segment_metrics(ref, NONE, resolution_s=0.5)["n_ref"] == 4
    assert segment_metrics(ref, NONE, durations={"a.wav": 1.0})["n_ref"] == 1  # cut at the file's end
    long = segment_metrics(ref, _events((5.0, 6.0, "dog bark")), durations={"a.wav": 10.0})
    assert (long["tp"], long["fp"], long["fn"]) == (0, 1, 2)


def test_event_onset_collar():
    ref = _events((1.0, 3.0, "dog bark"))
    late = event_metrics(ref, _events((1.25, 3.0, "dog bark")))  # 250 ms late: outside the 200-ms collar
    assert (late["tp"], late["fp"], late["fn"], late["error_rate"]) == (0, 1, 1, 2.0)
    near = event_metrics(ref, _events((1.15, 2.0, "dog bark")))  # offsets ignored by default
    assert (near["tp"], near["f1"], near["error_rate"]) == (1, 1.0, 0.0)


def test_event_offset_condition_uses_the_larger_of_collar_and_share_of_length():
    ref = _events((1.0, 3.0, "0"))  # 2 s long: offset tolerance max(0.2, 0.2 * 2) = 0.4 s
    assert event_metrics(ref, _events((1.0, 3.3, "0")), evaluate_offset=True)["tp"] == 1
    assert event_metrics(ref, _events((1.0, 3.5, "0")), evaluate_offset=True)["tp"] == 0
    assert event_metrics(ref, _events((1.0, 3.5, "0")), evaluate_offset=True, percentage_of_length=0.5)["tp"] == 1


def test_event_wrong_label_is_a_substitution():
    out = event_metrics(_events((1.0, 2.0, "0")), _events((1.1, 2.0, "café")))
    assert (out["tp"], out["substitutions"], out["deletions"], out["insertions"]) == (0, 1, 0, 0)
    assert out["f1"] == 0.0 and out["error_rate"] == 1.0


def test_event_matching_is_maximal_where_greedy_order_is_not():
    # greedy in table order pairs ref 1.2 with est 1.1 and leaves ref 1.0 without a partner; both can be matched
    ref = _events((1.2, 2.0, "0"), (1.0, 2.0, "0"))
    est = _events((1.1, 2.0, "0"), (1.35, 2.0, "0"))
    assert event_metrics(ref, est)["tp"] == 2


def test_event_pairing_leaves_the_most_substitutions():
    # one café hit either way; pairing the reference café with the later estimate frees the earlier one (136 ms
    # from the dog bark) to be a substitution instead of a deletion plus an insertion
    ref = _events((5.787, 7.0, "café"), (5.631, 7.0, "dog bark"))
    est = _events((5.767, 7.0, "café"), (5.845, 7.0, "café"))
    out = event_metrics(ref, est)
    assert (out["tp"], out["substitutions"], out["deletions"], out["insertions"]) == (1, 1, 0, 0)
    assert out["error_rate"] == 0.5


@pytest.mark.parametrize("metrics", [segment_metrics, event_metrics])
def test_perfect_detection_over_files_and_classes(metrics):
    ref = _events(("a.wav", 0.0, 1.5, "0"), ("a.wav", 1.0, 4.0, "dog bark"), ("b.wav", 2.0, 3.0, "café"))
    out = metrics(ref, ref.sample(frac=1.0, random_state=0))
    assert out["f1"] == 1.0 and out["error_rate"] == 0.0
    assert out["per_class"] == dict.fromkeys(CLASSES, 1.0)


@pytest.mark.parametrize("metrics", [segment_metrics, event_metrics])
@pytest.mark.parametrize("empty", [NONE, pd.DataFrame()])
def test_empty_estimates(metrics, empty):
    out = metrics(_events((0.0, 2.0, "0"), (3.0, 4.0, "café")), empty)
    assert (out["tp"], out["fp"], out["f1"], out["error_rate"]) == (0, 0, 0.0, 1.0)


@pytest.mark.parametrize("metrics", [segment_metrics, event_metrics])
def test_events_in_other_files_never_match(metrics):
    out = metrics(_events((0.0, 1.0, "0"), file="a.wav"), _events((0.0, 1.0, "0"), file="b.wav"))
    assert (out["tp"], out["fp"], out["fn"]) == (0, 1, 1)


def test_no_reference_events_gives_undefined_error_rate():
    out = event_metrics(NONE, _events((0.0, 1.0, "0")))
    assert out["f1"] == 0.0 and math.isnan(out["error_rate"])


def test_detections_columns_labels_as_text_and_a_class_subset():
    ref = _events((0.0, 2.0, 0), (0.0, 2.0, "dog bark"))
    detections = pd.DataFrame({"file": ["a.wav"], "start_s": [0.0], "end_s": [2.0], "label": ["0"], "score": [0.9]})
    assert list(normalise_events(detections).columns) == ["file", "onset", "offset", "label"]
    assert segment_metrics(ref, detections)["tp"] == 2  # the int label 0 is the class "0"
    only = event_metrics(ref, detections, labels=["0"])
    assert (only["tp"], only["fn"], list(only["per_class"])) == (1, 0, ["0"])


def test_bad_tables_are_refused():
    with pytest.raises(DatasetError, match="lacks column"):
        segment_metrics(pd.DataFrame({"onset": [0.0], "label": ["0"]}), NONE)
    with pytest.raises(DatasetError, match="offset before the onset"):
        event_metrics(_events((2.0, 1.0, "0")), NONE)
    with pytest.raises(ValueError, match="resolution_s"):
        segment_metrics(NONE, NONE, resolution_s=0)


def _random_tables(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference events in 3 files and a noisy system's estimates: jittered, relabelled, dropped and inserted."""
    rng = np.random.default_rng(seed)
    ref, est = [], []
    for file in ["a.wav", "b.wav", "c.wav"]:
        for _ in range(6):
            onset, label = rng.uniform(0, 10), CLASSES[rng.integers(3)]
            ref.append((file, round(onset, 3), round(onset + rng.uniform(0.3, 3), 3), label))
            if rng.random() < 0.8:
                label = CLASSES[rng.integers(3)] if rng.random() < 0.25 else label
                shifted = max(0.0, onset + rng.normal(0, 0.2))
                est.append((file, round(shifted, 3), round(shifted + rng.uniform(0.3, 3), 3), label))
        for _ in range(2):
            onset = rng.uniform(0, 10)
            est.append((file, round(onset, 3), round(onset + 1, 3), CLASSES[rng.integers(3)]))
    return _events(*ref), _events(*est)


def _sed_eval_lists(table: pd.DataFrame, file: str):
    import dcase_util

    rows = table[table["file"] == file]
    return dcase_util.containers.MetaDataContainer(
        [
            {"filename": f, "onset": on, "offset": off, "event_label": lab}
            for f, on, off, lab in rows.itertuples(index=False)
        ]
    )


# seed 190 has a tie where sed_eval's matching leaves fewer substitution pairs than ours
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 190])
def test_matches_sed_eval_on_random_tables(seed):
    sed_eval = pytest.importorskip("sed_eval")
    ref, est = _random_tables(seed)
    seg = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=CLASSES, time_resolution=1.0)
    onset_only = sed_eval.sound_event.EventBasedMetrics(event_label_list=CLASSES, evaluate_offset=False)
    both = sed_eval.sound_event.EventBasedMetrics(event_label_list=CLASSES, percentage_of_length=0.2)
    for file in ["a.wav", "b.wav", "c.wav"]:
        for m in (seg, onset_only, both):
            m.evaluate(_sed_eval_lists(ref, file), _sed_eval_lists(est, file))
    ours, theirs = segment_metrics(ref, est), seg.overall
    assert (ours["tp"], ours["fp"], ours["fn"]) == (theirs["Ntp"], theirs["Nfp"], theirs["Nfn"])
    assert (ours["substitutions"], ours["deletions"], ours["insertions"]) == (theirs["S"], theirs["D"], theirs["I"])
    _same_scores(ours, seg)
    for m, ours in ((onset_only, event_metrics(ref, est)), (both, event_metrics(ref, est, evaluate_offset=True))):
        assert ours["tp"] == m.overall["Ntp"] and ours["substitutions"] >= m.overall["Nsubs"]
        _same_scores(ours, m, error_rate=ours["substitutions"] == m.overall["Nsubs"])


def _same_scores(ours: dict, theirs, *, error_rate: bool = True) -> None:
    """Our F1, error rate and class-wise F1 equal sed_eval's (which adds a machine epsilon to each denominator)."""
    overall, class_wise = theirs.results_overall_metrics(), theirs.results_class_wise_metrics()
    assert ours["f1"] == pytest.approx(overall["f_measure"]["f_measure"], abs=1e-9)
    if error_rate:
        assert ours["error_rate"] == pytest.approx(overall["error_rate"]["error_rate"], abs=1e-9)
    else:
        assert ours["error_rate"] < overall["error_rate"]["error_rate"]
    for label in CLASSES:
        assert ours["per_class"][label] == pytest.approx(class_wise[label]["f_measure"]["f_measure"], abs=1e-9)
