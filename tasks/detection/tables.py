"""Event tables on disk: detections CSV, Raven Pro selection tables and Audacity labels, written atomically, and
reference annotations read back as one table (file, onset, offset, label, row) whose errors name file and row."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.cache import atomic_path
from tasks.data.layouts.base import AUDIO_EXTENSIONS
from tasks.detection.events import EVENT_COLUMNS
from tasks.errors import DatasetError

REFERENCE_COLUMNS = ["file", "onset", "offset", "label", "row"]
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
]
RAVEN_LABEL_COLUMNS = ("Annotation", "Species", "Label", "Class")
RAVEN_SUFFIX = ".selections.txt"
# an events CSV's columns, each the first present of its names (case-insensitive)
CSV_ALIASES = {
    "file": ("file", "path"),
    "onset": ("onset", "start_s"),
    "offset": ("offset", "end_s"),
    "label": ("label",),
}
# Raven names a saved table '<recording>.Table.1.selections.txt'
RAVEN_TABLE_NUMBER = re.compile(r"\.Table\.\d+$", re.IGNORECASE)


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
    """Write one recording's events as a tab-separated Raven Pro selection table (Selection numbered from 1)."""
    path = Path(path)
    if not 0 <= low_freq_hz < high_freq_hz:
        raise ValueError(f"need 0 <= low_freq_hz < high_freq_hz, got {low_freq_hz} and {high_freq_hz}")
    events = _events_of_one(events, path)
    score = events["score"] if "score" in events.columns else pd.Series(np.nan, index=events.index)
    lines = ["\t".join(RAVEN_COLUMNS)]
    for i, (start, end, label, s) in enumerate(zip(events["start_s"], events["end_s"], events["label"], score), 1):
        fields = [i, "Spectrogram 1", 1, f"{start:.6f}", f"{end:.6f}", f"{low_freq_hz:.3f}", f"{high_freq_hz:.3f}"]
        lines.append("\t".join(map(str, [*fields, label, "" if pd.isna(s) else f"{s:.6f}"])))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_audacity(events: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write one recording's events as an Audacity label track: 'start<TAB>end<TAB>label' lines, no header."""
    path = Path(path)
    events = _events_of_one(events, path)
    lines = [f"{s:.6f}\t{e:.6f}\t{label}\n" for s, e, label in zip(events["start_s"], events["end_s"], events["label"])]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    return path


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of each non-blank line of a UTF-8 text file (a BOM is dropped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read it as UTF-8 text ({e}); save it as UTF-8") from e
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _column(header: list[str], names, path: Path, what: str) -> int:
    """Index of the first of `names` in header (case-insensitive), or DatasetError listing the columns present."""
    folded = [h.strip().casefold() for h in header]
    for name in names:
        if name.casefold() in folded:
            return folded.index(name.casefold())
    raise DatasetError(f"{path}: no {what} column (looked for {list(names)}); the columns are {header}")


def _table(records: list[tuple[int, str, str, str, str]], path: Path) -> pd.DataFrame:
    """Reference table from (row, file, onset text, offset text, label) records, checking each row."""
    out = []
    for row, file, onset_text, offset_text, label in records:
        where = f"{path}, row {row}"
        times = []
        for name, text in (("onset", onset_text), ("offset", offset_text)):
            try:
                t = float(text)
            except ValueError:
                raise DatasetError(f"{where}: {name} {text!r} is not a number of seconds") from None
            if not np.isfinite(t):
                raise DatasetError(f"{where}: {name} {text!r} is not a finite number of seconds")
            times.append(t)
        onset, offset = times
        if onset < 0:
            raise DatasetError(f"{where}: onset {onset:g} s is negative; times count from the recording's start")
        if offset <= onset:
            raise DatasetError(f"{where}: offset {offset:g} s is not after onset {onset:g} s (duration <= 0)")
        if not label.strip():
            raise DatasetError(f"{where}: the label is empty; name the sound or delete the row")
        out.append((file, onset, offset, label.strip(), row))
    return pd.DataFrame(out, columns=REFERENCE_COLUMNS).astype(
        {"file": object, "onset": float, "offset": float, "label": object, "row": int}
    )


def read_raven(path: str | os.PathLike, *, label_column: str | None = None, file: str | None = None) -> pd.DataFrame:
    """A Raven selection table as (file, onset, offset, label, row); label from label_column or the first of
    Annotation/Species/Label/Class. A selection listed once per view (Waveform, Spectrogram) is kept once."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise DatasetError(f"{path}: empty file; a Raven selection table starts with a header line")
    header = lines[0][1].split("\t")
    begin = _column(header, ["Begin Time (s)"], path, "begin time")
    end = _column(header, ["End Time (s)"], path, "end time")
    label = _column(header, [label_column] if label_column else RAVEN_LABEL_COLUMNS, path, "label")
    folded = [h.strip().casefold() for h in header]
    selection = folded.index("selection") if "selection" in folded else None
    file = file if file is not None else _recording_stem(path)
    seen, records = set(), []
    for row, line in lines[1:]:
        fields = line.split("\t")
        if len(fields) < len(header):
            fields += [""] * (len(header) - len(fields))
        if selection is not None:
            if fields[selection] in seen:
                continue
            seen.add(fields[selection])
        records.append((row, file, fields[begin].strip(), fields[end].strip(), fields[label]))
    return _table(records, path)


def read_audacity(path: str | os.PathLike, *, file: str | None = None) -> pd.DataFrame:
    """An Audacity label track as (file, onset, offset, label, row); its '\\' frequency lines are skipped."""
    path = Path(path)
    file = file if file is not None else path.stem
    records = []
    for row, line in _lines(path):
        if line.startswith("\\"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetError(f"{path}, row {row}: expected 'start<TAB>end<TAB>label', got {line!r}")
        records.append((row, file, fields[0].strip(), fields[1].strip(), "\t".join(fields[2:])))
    return _table(records, path)


def read_events_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV of events with columns file|path, onset|start_s, offset|end_s, label as (file, onset, offset, label, row)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: empty file; expected a header with file, onset, offset, label")
            cols = [_column(header, names, path, what) for what, names in CSV_ALIASES.items()]
            records = []
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                fields += [""] * (len(header) - len(fields))
                f, onset, offset, label = (fields[i] for i in cols)
                records.append((reader.line_num, f.strip(), onset.strip(), offset.strip(), label))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: cannot read it as a UTF-8 CSV ({e})") from e
    return _table(records, path)


def _recording_stem(path: Path) -> str:
    """A Raven or Audacity table's name without its table suffix: 'rec1.Table.1.selections.txt' -> 'rec1'."""
    name = path.name
    stem = name[: -len(RAVEN_SUFFIX)] if name.lower().endswith(RAVEN_SUFFIX) else Path(name).stem
    return RAVEN_TABLE_NUMBER.sub("", stem)


def _recording(path: Path) -> str:
    """The recording a Raven/Audacity table annotates: a sibling audio file named like it, else the bare stem."""
    stem = _recording_stem(path)
    for ext in AUDIO_EXTENSIONS:
        for candidate in (stem + ext, stem + ext.upper()):
            if (path.parent / candidate).is_file():
                return candidate
    return stem


def _kind(path: Path) -> str | None:
    """'raven', 'audacity' or 'csv' by the file's name, or None if it is not a reference table."""
    name = path.name.lower()
    if name.endswith(RAVEN_SUFFIX):
        return "raven"
    return {".txt": "audacity", ".csv": "csv"}.get(Path(name).suffix)


def _read_one(path: Path) -> pd.DataFrame:
    """One reference table, read by the reader its name calls for."""
    kind = _kind(path)
    if kind == "raven":
        return read_raven(path, file=_recording(path))
    if kind == "audacity":
        return read_audacity(path, file=_recording(path))
    return read_events_csv(path)


def read_reference(path_or_dir: str | os.PathLike) -> pd.DataFrame:
    """Reference events from one table (*.selections.txt: Raven, *.txt: Audacity, *.csv) or every such table
    in a directory (sorted by name), as (file, onset, offset, label, row)."""
    path = Path(path_or_dir)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and _kind(p))
        if not paths:
            raise DatasetError(f"{path}: no reference tables (*.selections.txt, *.txt or *.csv) in this directory")
    elif path.is_file():
        if _kind(path) is None:
            raise DatasetError(f"{path}: unknown reference format; use *.selections.txt (Raven), *.txt or *.csv")
        paths = [path]
    else:
        raise DatasetError(f"{path}: no such file or directory")
    return pd.concat([_read_one(p) for p in paths], ignore_index=True)
