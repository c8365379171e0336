"""Window scores to sound events: threshold each class per window, then merge neighbouring windows into events.

A scores table has columns file, start_s, end_s, one float column per class name, and optionally loudness_db and
partial (True for a recording's last, zero-padded window)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

import numpy as np
import pandas as pd

from tasks.errors import DatasetError

WINDOW_COLUMNS = ("file", "start_s", "end_s")
RESERVED_COLUMNS = (*WINDOW_COLUMNS, "loudness_db", "peak_db", "floor_db", "snr_db", "partial", "error")
EVENT_COLUMNS = ["file", "start_s", "end_s", "label", "score"]
# Float slack when comparing a gap with merge_gap_s: 1.8 -> 2.3 is a 0.5 s gap even if it computes as 0.5000000001.
GAP_TOLERANCE_S = 1e-9


def class_columns(scores: pd.DataFrame) -> list[str]:
    """The class-score columns of a scores table: every column that is not a reserved one, in table order."""
    return [c for c in scores.columns if c not in RESERVED_COLUMNS]


def empty_events() -> pd.DataFrame:
    """An events table with no rows and the usual columns and dtypes."""
    return pd.DataFrame(
        {
            "file": pd.Series([], dtype=object),
            "start_s": pd.Series([], dtype=float),
            "end_s": pd.Series([], dtype=float),
            "label": pd.Series([], dtype=object),
            "score": pd.Series([], dtype=float),
        }
    )


def _require(table: pd.DataFrame, columns, what: str) -> None:
    """Raise DatasetError naming the columns a table lacks."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{what} lacks column(s) {missing}; it has {[str(c) for c in table.columns]}. "
            f"Expected {list(columns)} (and one score column per class for a scores table)."
        )


def window_detections(
    scores: pd.DataFrame, thresholds: Mapping[str, float], *, ignore: Collection[str] = ()
) -> pd.DataFrame:
    """One row (file, start_s, end_s, label, score) per window and class whose score >= that class's threshold.

    Classes in `ignore` (background) never yield rows; a window passing no threshold yields none (no top-class
    fallback). Thresholds for classes absent from `scores` are unused."""
    _require(scores, WINDOW_COLUMNS, "scores table")
    classes = [c for c in class_columns(scores) if c not in set(ignore)]
    missing = [c for c in classes if c not in thresholds]
    if missing:
        raise DatasetError(
            f"no threshold for class(es) {missing}; thresholds cover {sorted(map(str, thresholds))}. "
            "Calibrate thresholds for every class of this model, or list background classes in `ignore`."
        )
    parts = []
    for c in classes:
        t = float(thresholds[c])
        if np.isnan(t):
            raise DatasetError(f"threshold of class {c!r} is NaN; give a number (inf never detects).")
        col = pd.to_numeric(scores[c], errors="coerce")
        bad = np.flatnonzero((col.isna() & scores[c].notna()).to_numpy())
        if len(bad):
            r = int(bad[0])
            raise DatasetError(
                f"scores table, row {r} (file {scores['file'].iloc[r]!r}, start_s {scores['start_s'].iloc[r]}): "
                f"score of class {c!r} is {scores[c].iloc[r]!r}, not a number."
            )
        hit = (col >= t).to_numpy()  # NaN scores never pass
        if hit.any():
            part = scores.loc[hit, list(WINDOW_COLUMNS)].copy()
            part["label"] = c
            part["score"] = col[hit].astype(float)
            parts.append(part)
    if not parts:
        return empty_events()
    out = pd.concat(parts, ignore_index=True)
    out = out.sort_values(["file", "start_s", "end_s", "label"], kind="stable", ignore_index=True)
    return out[EVENT_COLUMNS].astype({"start_s": float, "end_s": float, "score": float})


def merge_events(
    detections: pd.DataFrame, *, merge_gap_s: float = 0.0, score: Literal["mean", "max"] = "max"
) -> pd.DataFrame:
    """Per file and label, join windows that overlap or lie at most merge_gap_s apart into one event.

    An event runs from its first window's start to the latest end among its windows; its score is the
    mean or max of its windows' scores. Sorted by file, start_s, label."""
    if score not in ("mean", "max"):
        raise ValueError(f"score must be 'mean' or 'max', got {score!r}")
    if not np.isfinite(merge_gap_s) or merge_gap_s < 0:
        raise ValueError(f"merge_gap_s must be a finite number >= 0 seconds, got {merge_gap_s}")
    _require(detections, EVENT_COLUMNS, "detections table")
    if detections.empty:
        return empty_events()
    d = detections[EVENT_COLUMNS].sort_values(["file", "label", "start_s", "end_s"], kind="stable")
    d = d.reset_index(drop=True)
    same = (d["file"] == d["file"].shift()) & (d["label"] == d["label"].shift())
    # latest end so far within each (file, label): a long window can cover several later short ones
    reach = d.groupby(["file", "label"], sort=False)["end_s"].cummax()
    prev_reach = reach.shift().where(same)
    starts = ~same | (d["start_s"] - prev_reach > merge_gap_s + GAP_TOLERANCE_S)
    event = starts.cumsum()
    out = d.groupby(event, sort=False).agg(
        file=("file", "first"),
        start_s=("start_s", "min"),
        end_s=("end_s", "max"),
        label=("label", "first"),
        score=("score", score),
    )
    out = out.sort_values(["file", "start_s", "label"], kind="stable", ignore_index=True)
    return out[EVENT_COLUMNS].astype({"start_s": float, "end_s": float, "score": float})
