"""Annotated long recordings: a folder of recordings, each with a Raven selection table ('<stem>.selections.txt',
'<stem>.Table.1.selections.txt') or an Audacity label file ('<stem>.txt'), or one CSV for all (path, onset, offset,
label, optional group and verdict; paths relative to the CSV). Each whole recording is cut into windows labelled
from its events (tasks/data/annotations.label_windows); each kept window is one region row. Groups: the recording,
or a coarser one from the CSV's group column or --group-pattern. No folds."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.data.annotations import (
    BACKGROUND,
    keep_background,
    label_windows,
    read_audacity,
    read_events_csv,
    read_raven,
    recording_beside,
    table_kind,
)
from tasks.data.audio import probe
from tasks.data.layouts.base import Listing, audio_files, listing
from tasks.data.layouts.folders import _compile, _group
from tasks.data.windows import auto_window_s
from tasks.errors import DatasetError, SoundflowError

# events may end this far past the recording's end (rounding in the annotation tool)
END_TOLERANCE_S = 0.5
DROP_REASONS = ("under threshold", "several classes", "unreviewed")


def matches(base: Path) -> bool:
    """A CSV whose columns hold onset and offset, or a folder holding a recording with its event table."""
    if base.is_file():
        return base.suffix.lower() == ".csv" and is_events_csv(base)
    return base.is_dir() and any(recording_beside(t) for t in _tables(base))


def is_events_csv(path: Path) -> bool:
    """True when the CSV's header has onset and offset columns (a manifest's regions are start_s/end_s)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"onset", "offset"} <= {h.strip().casefold() for h in header}


def _tables(folder: Path) -> list[Path]:
    """Raven and Audacity tables directly in folder, sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and table_kind(p) in ("raven", "audacity")
    )


def scan(
    base: Path,
    *,
    window_s: float | str = "auto",
    hop_s: float | None = None,
    label_column: str | None = None,
    min_label_overlap: float = 0.5,
    background_ratio: float = 1.0,
    seed: int = 0,
    group_pattern: str | None = None,
) -> Listing:
    """Windows of every annotated recording as region rows (fold <NA>), their window and counts."""
    if not 0 < min_label_overlap <= 1:
        raise DatasetError(f"--min-label-overlap must be in (0, 1], got {min_label_overlap}")
    if background_ratio < 0:
        raise DatasetError(f"--background-ratio must be >= 0, got {background_ratio}")
    pattern = _compile(group_pattern)
    notes: list[str] = []
    if base.is_file():
        recordings = _from_csv(base)
        root = base.parent
    else:
        recordings = _from_folder(base, label_column=label_column, notes=notes)
        root = base
    recordings = _with_durations(recordings, notes)
    if not recordings:
        raise DatasetError(f"{base}: no annotated recording could be read")
    all_events = pd.concat([r["events"] for r in recordings], ignore_index=True)
    window_s, reason = _window(window_s, all_events)
    hop_s = float(hop_s) if hop_s else window_s / 2
    parts = []
    for rec in recordings:
        windows = label_windows(
            rec["events"], rec["duration_s"], window_s=window_s, hop_s=hop_s, min_label_overlap=min_label_overlap
        )
        rel = rec["path"].relative_to(root).as_posix() if rec["path"].is_relative_to(root) else str(rec["path"])
        group = rec["group"] or (_group(pattern, rec["path"]) if pattern else rel)
        parts.append(windows.assign(path=str(rec["path"].absolute()), group=group))
    windows = pd.concat(parts, ignore_index=True)
    windows["kept"] = keep_background(windows["reason"].tolist(), ratio=background_ratio, seed=seed)
    kept = windows[windows["kept"]]
    if not (kept["reason"] == "event").any():
        raise DatasetError(
            f"{base}: no window holds one class at --min-label-overlap {min_label_overlap:g} "
            f"({len(all_events)} rows in the tables, {len(windows)} windows of {window_s:g} s); "
            "check the tables' times, or lower --window-s / --min-label-overlap"
        )
    rows = [
        {"path": r.path, "label": r.label, "fold": None, "group": r.group, "start_s": r.start_s, "end_s": r.end_s}
        for r in kept.itertuples(index=False)
    ]
    counts = _counts(all_events, windows, n_recordings=len(recordings), ratio=background_ratio)
    notes[:0] = _notes(counts, window_s=window_s, hop_s=hop_s, reason=reason)
    name = base.stem if base.is_file() else base.name
    out = listing(base, "annotations", name, sorted(set(kept["label"])), rows, notes)
    out.window_s, out.hop_s, out.window_reason, out.counts = window_s, hop_s, reason, counts
    return out


def _from_folder(base: Path, *, label_column: str | None, notes: list[str]) -> list[dict]:
    """One dict (path, events, table, group) per recording with a table; tables naming no recording fail."""
    found: dict[Path, Path] = {}
    for table in _tables(base):
        rec = recording_beside(table)
        if rec is None:
            raise DatasetError(
                f"{table}: no recording beside this table (looked for its name with an audio extension: .wav, "
                ".flac, ...); rename the table after its recording, or move it out of the folder"
            )
        if rec in found:
            raise DatasetError(f"{rec}: two event tables ({found[rec].name}, {table.name}); keep one")
        found[rec] = table
    missing = [p.name for p in audio_files(base) if p not in found]
    if missing:
        notes.append(
            f"{len(missing)} recording(s) without an event table left out: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    out = []
    for rec, table in sorted(found.items()):
        if table_kind(table) == "raven":
            events = read_raven(table, label_column=label_column, file=rec.name)
        else:
            events = read_audacity(table, file=rec.name)
        out.append({"path": rec, "events": events, "table": table, "group": ""})
    return out


def _from_csv(path: Path) -> list[dict]:
    """One dict per recording the CSV names (relative paths: against the CSV's folder); its group column."""
    table = read_events_csv(path, keep=("group",))
    out: dict[Path, dict] = {}
    for row, file, group in zip(table["row"], table["file"], table["group"]):
        rec = Path(file).expanduser()
        rec = rec if rec.is_absolute() else path.parent / rec
        if not file or not rec.is_file():
            raise DatasetError(f"{path}, row {row}: recording {file!r} not found ({rec})")
        entry = out.setdefault(rec, {"path": rec, "rows": [], "table": path, "group": group})
        if group and entry["group"] and group != entry["group"]:
            raise DatasetError(
                f"{path}, row {row}: group {group!r} differs from {entry['group']!r} given earlier for {file}"
            )
        entry["group"] = entry["group"] or group
        entry["rows"].append(row)
    for entry in out.values():
        entry["events"] = table[table["row"].isin(entry.pop("rows"))].drop(columns="group").reset_index(drop=True)
    return [out[k] for k in sorted(out)]


def _with_durations(recordings: list[dict], notes: list[str]) -> list[dict]:
    """Each recording's duration from its header; unreadable ones left out (noted); events past the end fail."""
    out, unreadable = [], []
    for rec in recordings:
        try:
            duration = probe(rec["path"])["duration_s"]
        except SoundflowError as exc:
            unreadable.append(f"{rec['path'].name} ({exc})")
            continue
        events = rec["events"]
        late = events[events["offset"] > duration + END_TOLERANCE_S]
        if len(late):
            first = late.iloc[0]
            raise DatasetError(
                f"{rec['table']}, row {first['row']}: the event ends at {first['offset']:g} s, past the end of "
                f"{rec['path'].name} ({duration:.2f} s); fix its times or the recording it names"
            )
        out.append({**rec, "duration_s": duration})
    if unreadable:
        notes.append(f"{len(unreadable)} unreadable recording(s) left out: {'; '.join(unreadable[:5])}")
    return out


def _window(window_s: float | str, events: pd.DataFrame) -> tuple[float, str]:
    """The window in seconds and why: a number as given, or auto from the events' durations."""
    if window_s != "auto":
        return float(window_s), "as given"
    durations = (events["offset"] - events["onset"])[events["kind"] == "event"].to_numpy()
    window, _ = auto_window_s(durations)
    if not len(durations):
        return window, "no events: the longest auto window"
    q = float(np.quantile(durations, 0.95))
    return window, (
        f"auto: 95th percentile of {len(durations)} events' durations is {q:.2f} s, rounded up to 0.1 s within 0.5-5 s"
    )


def _counts(events: pd.DataFrame, windows: pd.DataFrame, *, n_recordings: int, ratio: float) -> dict:
    """Rows and windows per class and reason, background kept of total, for notes and `soundflow inspect`."""
    rows = events.groupby(["label", "kind"]).size()
    classes = sorted(set(events.loc[events["kind"] != "negative", "label"]))
    per_class: dict[str, dict[str, int]] = {}
    labelled = Counter(windows.loc[windows["reason"] == "event", "label"])
    for c in classes:
        per_class[c] = {
            "events": int(rows.get((c, "event"), 0)),
            "unreviewed_rows": int(rows.get((c, "unreviewed"), 0)),
            "windows": int(labelled.get(c, 0)),
        }
    for reason in DROP_REASONS:
        touched = Counter(c for t in windows.loc[windows["reason"] == reason, "touched"] for c in t)
        for c in classes:
            per_class[c][reason] = int(touched.get(c, 0))
    background = windows[windows["reason"] == "background"]
    return {
        "recordings": n_recordings,
        "per_class": per_class,
        "negative_rows": int((events["kind"] == "negative").sum()),
        "background": {
            "kept": int(background["kept"].sum()),
            "total": len(background),
            "ratio": ratio,
            "negative": int((windows["reason"] == "negative").sum()),
        },
        "dropped": {r: int((windows["reason"] == r).sum()) for r in DROP_REASONS},
    }


def _notes(counts: dict, *, window_s: float, hop_s: float, reason: str) -> list[str]:
    """The counts in words: what the tables hold, which windows became what, and which were dropped."""
    per = counts["per_class"]
    n_events = sum(c["events"] for c in per.values())
    n_pending = sum(c["unreviewed_rows"] for c in per.values())
    bg = counts["background"]
    dropped = counts["dropped"]
    by_reason = "; ".join(
        f"{r} {n}" + (f" ({', '.join(f'{c} {v[r]}' for c, v in per.items() if v[r])})" if n else "")
        for r, n in dropped.items()
    )
    events = ", ".join(f"{c} {v['events']}" for c, v in per.items())
    windows = ", ".join(f"{c} {v['windows']}" for c, v in per.items())
    return [
        f"annotations: {counts['recordings']} recordings, {n_events} events of {len(per)} classes ({events}), "
        f"{counts['negative_rows']} rejected detections, {n_pending} unreviewed rows; {window_s:g}-s windows every "
        f"{hop_s:g} s ({reason})",
        f"windows per class: {windows}; {BACKGROUND}: {bg['kept']} of {bg['total']} kept (--background-ratio "
        f"{bg['ratio']:g}) + {bg['negative']} from rejected detections",
        f"dropped windows: {sum(dropped.values())} ({by_reason})",
    ]
