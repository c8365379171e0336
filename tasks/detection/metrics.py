"""Sound event detection metrics as the DCASE challenges compute them (sed_eval; Mesaros, Heittola and Virtanen 2016).

Both tables have columns file, onset, offset, label in seconds (a detections table's start_s/end_s, or sed_eval's
filename/event_label, are renamed). Counts are summed over files and classes (micro-average); undefined precision,
recall and F1 (0/0) are 0 as in sed_eval, and the error rate is NaN when the reference has no events."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from tasks.errors import DatasetError

COLUMNS = ["file", "onset", "offset", "label"]
_ALIASES = {"start_s": "onset", "end_s": "offset", "filename": "file", "event_label": "label"}


def normalise_events(events: pd.DataFrame) -> pd.DataFrame:
    """The table as columns file, onset, offset, label (aliases renamed, file and label as str, one file if none)."""
    if len(events) == 0:
        return pd.DataFrame({"file": [], "onset": [], "offset": [], "label": []}).astype({"file": str, "label": str})
    df = events.rename(columns={a: c for a, c in _ALIASES.items() if a in events.columns and c not in events.columns})
    if "file" not in df.columns:
        df = df.assign(file="")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(
            f"event table lacks column(s) {missing}; it has {[str(c) for c in events.columns]}. "
            f"Expected {COLUMNS} (start_s/end_s are accepted for onset/offset)."
        )
    df = df[COLUMNS].astype({"file": str, "label": str, "onset": float, "offset": float}).reset_index(drop=True)
    bad = df[~((df["onset"] >= 0) & (df["offset"] >= df["onset"]))]
    if len(bad):
        raise DatasetError(
            f"{len(bad)} event(s) with a negative or missing onset or an offset before the onset, first: "
            f"{bad.iloc[0].to_dict()}; fix or drop them before scoring."
        )
    return df


def _prepare(
    reference: pd.DataFrame, estimated: pd.DataFrame, labels: Iterable[str] | None
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(reference, estimated, class names): normalised tables keeping only events of the given classes."""
    ref, est = normalise_events(reference), normalise_events(estimated)
    if labels is None:
        return ref, est, sorted(set(ref["label"]) | set(est["label"]))
    names = [str(label) for label in labels]
    return ref[ref["label"].isin(names)], est[est["label"].isin(names)], names


def _by_file(ref: pd.DataFrame, est: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(file, its reference events, its estimated events) for every file in either table, in sorted order."""
    refs, ests = dict(tuple(ref.groupby("file"))), dict(tuple(est.groupby("file")))
    empty = ref.iloc[:0]
    for file in sorted(set(refs) | set(ests)):
        yield file, refs.get(file, empty), ests.get(file, empty)


def _scores(tp: float, n_ref: float, n_est: float) -> dict[str, float]:
    """Precision, recall and F1 from true positives and the reference and estimated totals (0 when undefined)."""
    return {
        "precision": tp / n_est if n_est else 0.0,
        "recall": tp / n_ref if n_ref else 0.0,
        "f1": 2 * tp / (n_ref + n_est) if n_ref + n_est else 0.0,
    }


def _roll(events: pd.DataFrame, names: list[str], *, n_segments: int, resolution_s: float) -> np.ndarray:
    """(n_segments, n_classes) bool activity: a segment is active if an event overlaps any part of it."""
    roll = np.zeros((n_segments, len(names)), bool)
    column = {name: j for j, name in enumerate(names)}
    for onset, offset, label in zip(events["onset"], events["offset"], events["label"]):
        # sed_eval's rounding, written the same way so both agree to the last float bit
        roll[int(math.floor(onset * 1 / resolution_s)) : int(math.ceil(offset * 1 / resolution_s)), column[label]] = 1
    return roll


def segment_metrics(
    reference: pd.DataFrame,
    estimated: pd.DataFrame,
    *,
    resolution_s: float = 1.0,
    labels: Iterable[str] | None = None,
    durations: Mapping[str, float] | None = None,
) -> dict:
    """Segment-based TP/FP/FN, precision, recall, F1, error rate (S+D+I)/N and class-wise F1 (`per_class`).

    A file lasts durations[file] if given, else up to the last offset in either table."""
    if resolution_s <= 0:
        raise ValueError(f"resolution_s must be > 0 seconds, got {resolution_s}")
    ref, est, names = _prepare(reference, estimated, labels)
    lengths = {str(k): float(v) for k, v in (durations or {}).items()}
    tp, fp, fn = (np.zeros(len(names), int) for _ in range(3))
    subs = dels = ins = 0
    for file, r, e in _by_file(ref, est):
        length_s = lengths.get(file, max([*r["offset"], *e["offset"], 0.0]))
        n_segments = int(math.ceil(length_s * 1 / resolution_s))
        r_roll = _roll(r, names, n_segments=n_segments, resolution_s=resolution_s)
        e_roll = _roll(e, names, n_segments=n_segments, resolution_s=resolution_s)
        fn_k, fp_k = (r_roll & ~e_roll).sum(1), (e_roll & ~r_roll).sum(1)
        subs += int(np.minimum(fn_k, fp_k).sum())
        dels += int(np.maximum(0, fn_k - fp_k).sum())
        ins += int(np.maximum(0, fp_k - fn_k).sum())
        tp += (r_roll & e_roll).sum(0)
        fp += (e_roll & ~r_roll).sum(0)
        fn += (r_roll & ~e_roll).sum(0)
    n_ref = int(tp.sum() + fn.sum())
    return {
        "tp": int(tp.sum()),
        "fp": int(fp.sum()),
        "fn": int(fn.sum()),
        **_scores(tp.sum(), n_ref, tp.sum() + fp.sum()),
        "substitutions": subs,
        "deletions": dels,
        "insertions": ins,
        "n_ref": n_ref,
        "error_rate": (subs + dels + ins) / n_ref if n_ref else math.nan,
        "per_class": {n: _scores(tp[j], tp[j] + fn[j], tp[j] + fp[j])["f1"] for j, n in enumerate(names)},
    }


def _match(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the one-to-one pairs of positive weight with the largest total weight."""
    if not weight.any():
        return np.zeros(0, int), np.zeros(0, int)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    keep = weight[rows, cols] > 0
    return rows[keep], cols[keep]


def event_metrics(
    reference: pd.DataFrame,
    estimated: pd.DataFrame,
    *,
    t_collar_s: float = 0.2,
    percentage_of_length: float = 0.2,
    evaluate_offset: bool = False,
    labels: Iterable[str] | None = None,
) -> dict:
    """Event-based TP/FP/FN, precision, recall, F1, error rate and class-wise F1 (`per_class`), one-to-one per file.

    A hit has the same class, an onset within t_collar_s and, with evaluate_offset, an offset within
    max(t_collar_s, percentage_of_length * reference length). Pairs are one maximum-weight assignment per file: a hit
    outweighs all substitutions (timing met, class not), so TP is the maximum matching's (sed_eval's 'optimal') and,
    among such matchings, substitutions are as many as possible (sed_eval pairs them greedily: rarely fewer)."""
    ref, est, names = _prepare(reference, estimated, labels)
    tp = dict.fromkeys(names, 0)
    subs = 0
    for _, r, e in _by_file(ref, est):
        timing = np.abs(r["onset"].to_numpy()[:, None] - e["onset"].to_numpy()[None, :]) <= t_collar_s
        if evaluate_offset:
            tolerance = np.maximum(t_collar_s, percentage_of_length * (r["offset"] - r["onset"]).to_numpy())
            timing &= np.abs(r["offset"].to_numpy()[:, None] - e["offset"].to_numpy()[None, :]) <= tolerance[:, None]
        same = r["label"].to_numpy()[:, None] == e["label"].to_numpy()[None, :]
        # a hit weighs more than any number of substitutions (at most len(r)), so no hit is traded for them
        rows, cols = _match(np.where(same, len(r) + 1, 1) * timing)
        hit = same[rows, cols]
        for label in r["label"].to_numpy()[rows[hit]]:
            tp[label] += 1
        subs += int((~hit).sum())
    n_ref, n_est = ref["label"].value_counts(), est["label"].value_counts()
    total_tp, total_ref, total_est = sum(tp.values()), len(ref), len(est)
    return {
        "tp": total_tp,
        "fp": total_est - total_tp,
        "fn": total_ref - total_tp,
        **_scores(total_tp, total_ref, total_est),
        "substitutions": subs,
        "deletions": total_ref - total_tp - subs,
        "insertions": total_est - total_tp - subs,
        "n_ref": total_ref,
        "error_rate": (total_ref + total_est - 2 * total_tp - subs) / total_ref if total_ref else math.nan,
        "per_class": {n: _scores(tp[n], n_ref.get(n, 0), n_est.get(n, 0))["f1"] for n in names},
    }
