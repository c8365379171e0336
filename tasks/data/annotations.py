"""Annotated recordings: event tables (Raven Pro selections, Audacity labels, onset/offset CSVs) read as one table
(file, onset, offset, label, row, kind) whose errors name file and row, and the rule that labels the windows of a
recording from its events. Reviewed detection tables read back too: a Raven `Verdict` column or an Audacity `?`
suffix says whether a row is a confirmed event, a rejected detection (a negative) or not yet reviewed."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.data.audio import AUDIO_EXTENSIONS
from tasks.errors import DatasetError

REFERENCE_COLUMNS = ["file", "onset", "offset", "label", "row", "kind"]
KINDS = ("event", "negative", "unreviewed")
BACKGROUND = "background"
RAVEN_LABEL_COLUMNS = ("Annotation", "Species", "Label", "Class")
RAVEN_SUFFIX = ".selections.txt"
VERDICT_COLUMN = "Verdict"
# a reviewer's verdict (case-insensitive); empty = not reviewed yet
VERDICT_YES = ("yes", "y", "true", "1", "ok", "confirmed")
VERDICT_NO = ("no", "n", "false", "0", "rejected", "wrong")
# an events CSV's columns, each the first present of its names (case-insensitive)
CSV_ALIASES = {
    "file": ("file", "path"),
    "onset": ("onset", "start_s"),
    "offset": ("offset", "end_s"),
    "label": ("label",),
}
# Raven names a saved table '<recording>.Table.1.selections.txt'
RAVEN_TABLE_NUMBER = re.compile(r"\.Table\.\d+$", re.IGNORECASE)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of each non-blank line of a UTF-8 text file (a BOM is dropped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read it as UTF-8 text ({e}); save it as UTF-8") from e
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _column(header: list[str], names, path: Path, what: str) -> int:
    """Index of the first of `names` in header (case-insensitive), or DatasetError listing the columns present."""
    found = _optional_column(header, names)
    if found is None:
        raise DatasetError(f"{path}: no {what} column (looked for {list(names)}); the columns are {header}")
    return found


def _optional_column(header: list[str], names) -> int | None:
    folded = [h.strip().casefold() for h in header]
    for name in names:
        if name.casefold() in folded:
            return folded.index(name.casefold())
    return None


def _verdict(text: str, where: str) -> str:
    """A Verdict cell as a kind: yes -> event, no -> negative, empty -> unreviewed."""
    word = text.strip().casefold()
    if word in VERDICT_YES:
        return "event"
    if word in VERDICT_NO:
        return "negative"
    if not word:
        return "unreviewed"
    raise DatasetError(
        f"{where}: verdict {text.strip()!r} is neither yes ({'/'.join(VERDICT_YES)}) nor no "
        f"({'/'.join(VERDICT_NO)}); leave it empty while unreviewed"
    )


def _table(records: list[tuple[int, str, str, str, str, str]], path: Path) -> pd.DataFrame:
    """Reference table from (row, file, onset text, offset text, label, kind) records, checking each row."""
    out = []
    for row, file, onset_text, offset_text, label, kind in records:
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
        if not label.strip() and kind != "negative":  # a rejected detection needs no class
            raise DatasetError(f"{where}: the label is empty; name the sound or delete the row")
        out.append((file, onset, offset, label.strip(), row, kind))
    return pd.DataFrame(out, columns=REFERENCE_COLUMNS).astype(
        {"file": object, "onset": float, "offset": float, "label": object, "row": int, "kind": object}
    )


def read_raven(path: str | os.PathLike, *, label_column: str | None = None, file: str | None = None) -> pd.DataFrame:
    """A Raven selection table as (file, onset, offset, label, row, kind); label from label_column or the first of
    Annotation/Species/Label/Class; kind from a Verdict column (none: every row an event). A selection listed
    once per view (Waveform, Spectrogram) is kept once."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise DatasetError(f"{path}: empty file; a Raven selection table starts with a header line")
    header = lines[0][1].split("\t")
    begin = _column(header, ["Begin Time (s)"], path, "begin time")
    end = _column(header, ["End Time (s)"], path, "end time")
    label = _column(header, [label_column] if label_column else RAVEN_LABEL_COLUMNS, path, "label")
    verdict = _optional_column(header, [VERDICT_COLUMN])
    selection = _optional_column(header, ["Selection"])
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
        kind = "event" if verdict is None else _verdict(fields[verdict], f"{path}, row {row}")
        records.append((row, file, fields[begin].strip(), fields[end].strip(), fields[label], kind))
    return _table(records, path)


def audacity_kind(text: str) -> tuple[str, str]:
    """(label, kind) of an Audacity label: 'dog' an event, 'dog?' unreviewed, 'no' or 'dog?no' rejected."""
    text = text.strip()
    if text.casefold() == "no" or text.casefold().endswith("?no"):
        return text[:-3].strip() if len(text) > 2 else "", "negative"
    if text.endswith("?"):
        return text[:-1].strip(), "unreviewed"
    return text, "event"


def read_audacity(path: str | os.PathLike, *, file: str | None = None) -> pd.DataFrame:
    """An Audacity label track as (file, onset, offset, label, row, kind); its '\\' frequency lines are skipped."""
    path = Path(path)
    file = file if file is not None else path.stem
    records = []
    for row, line in _lines(path):
        if line.startswith("\\"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetError(f"{path}, row {row}: expected 'start<TAB>end<TAB>label', got {line!r}")
        label, kind = audacity_kind("\t".join(fields[2:]))
        records.append((row, file, fields[0].strip(), fields[1].strip(), label, kind))
    return _table(records, path)


def read_events_csv(path: str | os.PathLike, *, keep: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV of events with columns file|path, onset|start_s, offset|end_s, label (and an optional verdict) as
    (file, onset, offset, label, row, kind), plus the `keep` columns (empty text where the CSV lacks them)."""
    path = Path(path)
    extra: list[tuple[str, int | None]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: empty file; expected a header with file, onset, offset, label")
            cols = [_column(header, names, path, what) for what, names in CSV_ALIASES.items()]
            verdict = _optional_column(header, [VERDICT_COLUMN])
            extra = [(name, _optional_column(header, [name])) for name in keep]
            records, kept = [], []
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                fields += [""] * (len(header) - len(fields))
                f, onset, offset, label = (fields[i] for i in cols)
                row = reader.line_num
                kind = "event" if verdict is None else _verdict(fields[verdict], f"{path}, row {row}")
                records.append((row, f.strip(), onset.strip(), offset.strip(), label, kind))
                kept.append([fields[i].strip() if i is not None else "" for _, i in extra])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: cannot read it as a UTF-8 CSV ({e})") from e
    table = _table(records, path)
    for j, (name, _) in enumerate(extra):
        table[name] = [k[j] for k in kept]
    return table


def _recording_stem(path: Path) -> str:
    """A Raven or Audacity table's name without its table suffix: 'rec1.Table.1.selections.txt' -> 'rec1'."""
    name = path.name
    stem = name[: -len(RAVEN_SUFFIX)] if name.lower().endswith(RAVEN_SUFFIX) else Path(name).stem
    return RAVEN_TABLE_NUMBER.sub("", stem)


def recording_beside(table: Path) -> Path | None:
    """The audio file a Raven/Audacity table annotates (same stem, same folder), or None."""
    stem = _recording_stem(table)
    for ext in AUDIO_EXTENSIONS:
        for candidate in (stem + ext, stem + ext.upper()):
            if (table.parent / candidate).is_file():
                return table.parent / candidate
    return None


def table_kind(path: Path) -> str | None:
    """'raven', 'audacity' or 'csv' by the file's name, or None if it is not an event table."""
    name = path.name.lower()
    if name.endswith(RAVEN_SUFFIX):
        return "raven"
    return {".txt": "audacity", ".csv": "csv"}.get(Path(name).suffix)


def read_event_table(path: Path, *, label_column: str | None = None) -> pd.DataFrame:
    """One event table, read by the reader its name calls for (Raven/Audacity: file = the recording beside it,
    else the bare stem)."""
    kind = table_kind(path)
    if kind in ("raven", "audacity"):
        beside = recording_beside(path)
        file = beside.name if beside else _recording_stem(path)
        if kind == "raven":
            return read_raven(path, label_column=label_column, file=file)
        return read_audacity(path, file=file)
    return read_events_csv(path)


def read_reference(path_or_dir: str | os.PathLike) -> pd.DataFrame:
    """Reference events from one table (*.selections.txt: Raven, *.txt: Audacity, *.csv) or every such table
    in a directory (sorted by name), as (file, onset, offset, label, row, kind)."""
    path = Path(path_or_dir)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and table_kind(p))
        if not paths:
            raise DatasetError(f"{path}: no reference tables (*.selections.txt, *.txt or *.csv) in this directory")
    elif path.is_file():
        if table_kind(path) is None:
            raise DatasetError(f"{path}: unknown reference format; use *.selections.txt (Raven), *.txt or *.csv")
        paths = [path]
    else:
        raise DatasetError(f"{path}: no such file or directory")
    return pd.concat([read_event_table(p) for p in paths], ignore_index=True)


def window_grid(duration_s: float, *, window_s: float, hop_s: float) -> np.ndarray:
    """Window start times over a whole recording, the rule of tasks/data/windows.window_starts in seconds: one
    window for a recording up to window + hop/2 long, else one every hop plus one ending at the recording's end."""
    if window_s <= 0 or hop_s <= 0:
        raise ValueError(f"window_s and hop_s must be > 0, got {window_s} and {hop_s}")
    if duration_s <= window_s + hop_s / 2:
        return np.zeros(1)
    starts = np.arange(0.0, duration_s - window_s + 1e-9, hop_s)
    if starts[-1] + window_s < duration_s - 1e-9:
        starts = np.append(starts, duration_s - window_s)
    return np.round(starts, 6)


def _covered(spans: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of [lo, hi) covered by the union of spans."""
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in spans if b > lo and a < hi)
    total, end = 0.0, lo
    for a, b in clipped:
        a = max(a, end)
        if b > a:
            total += b - a
            end = b
    return total


def label_windows(
    events: pd.DataFrame, duration_s: float, *, window_s: float, hop_s: float, min_label_overlap: float
) -> pd.DataFrame:
    """(start_s, end_s, label, reason) of every window of one recording, from its events (onset, offset, label,
    kind). A window takes class c when c's events cover at least min_label_overlap of it, or of an event shorter
    than the window (reason 'event'); untouched windows are BACKGROUND ('background'), and so are windows that
    rejected detections cover at min_label_overlap ('negative'); the rest have no label: 'several classes',
    'under threshold' (touched, too little), 'unreviewed' (an unreviewed row touches it). `touched`: the classes
    of the events and unreviewed rows that touch the window."""
    kind = events["kind"] if "kind" in events.columns else pd.Series("event", index=events.index)
    spans: dict[str, dict[str, list[tuple[float, float]]]] = {k: {} for k in KINDS}
    for onset, offset, label, k in zip(events["onset"], events["offset"], events["label"], kind):
        spans[k].setdefault(str(label), []).append((float(onset), float(offset)))
    negatives = [s for group in spans["negative"].values() for s in group]
    rows = []
    for start in window_grid(duration_s, window_s=window_s, hop_s=hop_s):
        lo, hi = float(start), float(start) + window_s
        touched, enough = [], []
        for label, group in spans["event"].items():
            if _covered(group, lo, hi) <= 0:
                continue
            touched.append(label)
            share = _covered(group, lo, hi) / window_s
            short = max((_covered([s], lo, hi) / (s[1] - s[0]) for s in group if s[1] - s[0] < window_s), default=0)
            if max(share, short) >= min_label_overlap - 1e-9:
                enough.append(label)
        pending = [lab for lab, group in spans["unreviewed"].items() if _covered(group, lo, hi) > 0]
        if pending:
            label, reason = None, "unreviewed"
        elif len(touched) > 1:
            label, reason = None, "several classes"
        elif enough:
            label, reason = enough[0], "event"
        elif touched:
            label, reason = None, "under threshold"
        elif _covered(negatives, lo, hi) / window_s >= min_label_overlap - 1e-9:
            label, reason = BACKGROUND, "negative"
        else:
            label, reason = BACKGROUND, "background"
        rows.append((lo, hi, label, reason, tuple(sorted(set(touched) | set(pending)))))
    columns = ["start_s", "end_s", "label", "reason", "touched"]
    return pd.DataFrame(
        {c: pd.Series([r[i] for r in rows], dtype=float if i < 2 else object) for i, c in enumerate(columns)}
    )


def keep_background(reasons: Sequence[str], *, ratio: float, seed: int) -> np.ndarray:
    """Which windows to keep (bool per window): every labelled and 'negative' window, and at most ratio times the
    labelled ones of the plain 'background' windows, drawn with np.random.default_rng(seed); others are dropped."""
    reasons = np.asarray(reasons, dtype=object)
    keep = np.isin(reasons, ["event", "negative"])
    background = np.flatnonzero(reasons == "background")
    n = min(len(background), int(np.floor(ratio * int((reasons == "event").sum()) + 1e-9)))
    chosen = np.random.default_rng(seed).choice(background, size=n, replace=False) if n else []
    keep[chosen] = True
    return keep
