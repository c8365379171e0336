"""From window scores to what a person opens: events under per-class thresholds, one Raven selection table and one
Audacity label file per recording, detections.csv for all, and the few lines that say what was found where."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tasks.detection.activity import localise
from tasks.detection.events import empty_events, merge_events, window_detections
from tasks.detection.tables import RAVEN_SUFFIX, write_audacity, write_detections_csv, write_raven

DETECTIONS_FILE = "detections.csv"


def detect_events(
    scores: pd.DataFrame,
    thresholds: Mapping[str, float],
    *,
    ignore: Collection[str] = (),
    merge_gap_s: float = 0.0,
    score: Literal["mean", "max"] = "max",
    min_snr_db: float | None = None,
    levels: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Events (file, start_s, end_s, label, score): windows whose class score reaches its threshold, merged per
    file and class across overlaps and gaps up to merge_gap_s; windows no louder than min_snr_db above their
    recording's background and background classes (`ignore`) detect nothing. With the recordings' frame `levels`
    each event is narrowed to the sounds in it that most of their windows detected (activity.localise)."""
    if scores.empty:
        return empty_events()
    grid = scores[["file", "start_s", "end_s"]]
    if min_snr_db is not None and {"peak_db", "floor_db"} <= set(scores.columns):
        scores = scores[snr_db(scores) >= min_snr_db]
    if "error" in scores.columns:
        scores = scores[scores["error"].fillna("") == ""].drop(columns="error")
    windows = window_detections(scores, thresholds, ignore=ignore)
    events = merge_events(windows, merge_gap_s=merge_gap_s, score=score)
    if levels and min_snr_db is not None:
        events = localise(events, windows, grid, dict(levels), min_snr_db=min_snr_db)
    return events


def snr_db(scores: pd.DataFrame) -> pd.Series:
    """How far each window's loudest frame rises above its recording's background: the median over the
    recording's windows of their quietest frame (the gaps between events)."""
    background = scores.groupby("file", sort=False)["floor_db"].transform("median")
    return scores["peak_db"] - background


def table_stem(file: str, roots: Sequence[str | os.PathLike] = ()) -> Path:
    """Where a recording's tables go under the output folder: its path below the input folder it was found in
    (so two recordings named alike in different folders do not collide), without the audio extension."""
    path = Path(file)
    for root in roots:
        r = Path(root)
        if r.is_dir() and path.is_relative_to(r):
            return path.relative_to(r).with_suffix("")
    return Path(path.name).with_suffix("")


def write_tables(
    events: pd.DataFrame,
    files: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    roots: Sequence[str | os.PathLike] = (),
    high_freq_hz: float,
) -> tuple[Path, list[Path]]:
    """detections.csv (every recording), and per recording (with or without events, so a reviewer sees it was
    analysed) `<recording>.selections.txt` for Raven Pro and `<recording>.txt` for Audacity. Returns
    (detections.csv, the per-recording tables)."""
    out = Path(out_dir)
    detections = write_detections_csv(events, out / DETECTIONS_FILE)
    by_file = dict(tuple(events.groupby("file", sort=False))) if len(events) else {}
    tables = []
    for file in files:
        stem = out / table_stem(file, roots)
        mine = by_file.get(file, empty_events())
        raven, audacity = stem.with_name(stem.name + RAVEN_SUFFIX), stem.with_name(stem.name + ".txt")
        tables += [
            write_raven(mine.assign(file=file), raven, high_freq_hz=high_freq_hz),
            write_audacity(mine.assign(file=file), audacity),
        ]
    return detections, tables


def summary_lines(events: pd.DataFrame, *, n_files: int, hours: float, top: int = 5) -> list[str]:
    """Detections per class and the busiest recordings, for the log and the Prefect artifact."""
    lines = [f"{len(events)} detections in {n_files} recordings ({hours:.2f} h of audio)"]
    if len(events):
        per_class = events["label"].value_counts()
        lines.append("per class: " + ", ".join(f"{label} {n}" for label, n in per_class.items()))
        busiest = events["file"].value_counts().head(top)
        lines.append("busiest: " + ", ".join(f"{Path(f).name} ({n})" for f, n in busiest.items()))
    return lines
