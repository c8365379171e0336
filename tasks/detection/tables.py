"""Event tables on disk, written atomically for review: detections CSV, Raven Pro selection tables (a last, empty
`Verdict` column for the reviewer) and Audacity labels (`label?`: unreviewed). The readers, which also read the
reviews back, are in the data layer (tasks/data/annotations.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.cache import atomic_path
from tasks.data.annotations import RAVEN_SUFFIX, VERDICT_COLUMN
from tasks.detection.events import EVENT_COLUMNS
from tasks.errors import DatasetError

RAVEN_COLUMNS = [
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Annotation",
    "Score",
    VERDICT_COLUMN,
]
# an Audacity label the reviewer has not confirmed yet ends with this; delete it to confirm, add 'no' to reject
UNREVIEWED_MARK = "?"
__all__ = ["RAVEN_COLUMNS", "RAVEN_SUFFIX", "write_audacity", "write_detections_csv", "write_raven"]


def _events_of_one(events: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The events (file column optional) with clean labels, or DatasetError naming what is wrong."""
    missing = [c for c in ("start_s", "end_s", "label") if c not in events.columns]
    if missing:
        raise DatasetError(f"{path}: events lack column(s) {missing}; they have {list(events.columns)}")
    if "file" in events.columns and events["file"].nunique() > 1:
        raise DatasetError(f"{path}: one table per recording, got events of {sorted(events['file'].unique())}")
    labels = events["label"].astype(str)
    bad = labels.str.contains(r"[\t\r\n]")
    if bad.any():
        raise DatasetError(f"{path}: label {labels[bad].iloc[0]!r} holds a tab or line break; rename the class")
    return events.assign(label=labels).sort_values("start_s", kind="stable")


def write_detections_csv(events: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write events as CSV with exactly the columns file, start_s, end_s, label, score."""
    path = Path(path)
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise DatasetError(f"{path}: events lack column(s) {missing}; they have {list(events.columns)}")
    with atomic_path(path) as tmp:
        events[EVENT_COLUMNS].to_csv(tmp, index=False, encoding="utf-8")
    return path


def write_raven(
    events: pd.DataFrame, path: str | os.PathLike, *, low_freq_hz: float = 0.0, high_freq_hz: float
) -> Path:
    """Write one recording's events as a tab-separated Raven Pro selection table (Selection numbered from 1), its
    last column `Verdict` empty for the reviewer (yes / no)."""
    path = Path(path)
    if not 0 <= low_freq_hz < high_freq_hz:
        raise ValueError(f"need 0 <= low_freq_hz < high_freq_hz, got {low_freq_hz} and {high_freq_hz}")
    events = _events_of_one(events, path)
    score = events["score"] if "score" in events.columns else pd.Series(np.nan, index=events.index)
    lines = ["\t".join(RAVEN_COLUMNS)]
    for i, (start, end, label, s) in enumerate(zip(events["start_s"], events["end_s"], events["label"], score), 1):
        fields = [i, "Spectrogram 1", 1, f"{start:.6f}", f"{end:.6f}", f"{low_freq_hz:.3f}", f"{high_freq_hz:.3f}"]
        lines.append("\t".join(map(str, [*fields, label, "" if pd.isna(s) else f"{s:.6f}", ""])))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_audacity(events: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write one recording's events as an Audacity label track: 'start<TAB>end<TAB>label?' lines, no header (the
    '?' marks a detection nobody reviewed: the reviewer deletes it to confirm, or writes 'label?no' to reject)."""
    path = Path(path)
    events = _events_of_one(events, path)
    lines = [
        f"{s:.6f}\t{e:.6f}\t{label}{UNREVIEWED_MARK}\n"
        for s, e, label in zip(events["start_s"], events["end_s"], events["label"])
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    return path
