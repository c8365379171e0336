"""What every layout adapter returns, and the file-listing helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.data.audio import AUDIO_EXTENSIONS
from tasks.errors import DatasetError

# recordings table: one row per recording (a file, or a region of one); start_s/end_s NaN = the whole file
RECORDING_COLUMNS = ["path", "label", "fold", "group", "source_class_id", "start_s", "end_s"]


@dataclass
class Listing:
    """A scanned dataset: where it is, its layout and name, class names in id order, its recordings, notes.

    A layout that cuts its own windows (annotations: regions of window_s every hop_s) sets window_s and hop_s,
    why it chose that window, and `counts` (a small JSON-able summary kept in dataset.json)."""

    base: Path
    layout: str
    name: str
    classes: list[str]
    recordings: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    window_s: float | None = None
    hop_s: float | None = None
    window_reason: str = ""
    counts: dict = field(default_factory=dict)


def listing(base: Path, layout: str, name: str, classes: list[str], rows: list[dict], notes=None) -> Listing:
    """Build a Listing from row dicts, filling optional columns; labels and groups as strings."""
    frame = pd.DataFrame(rows, columns=RECORDING_COLUMNS)
    for col in ("label", "group", "source_class_id"):
        frame[col] = frame[col].fillna("").astype(str)
    frame["fold"] = pd.array(frame["fold"], dtype="Int64")
    frame[["start_s", "end_s"]] = frame[["start_s", "end_s"]].astype(float)
    classes = [str(c) for c in classes]
    unknown = sorted(set(frame["label"]) - set(classes))
    if unknown:
        raise DatasetError(f"{base}: labels {unknown} are not among the classes {classes}")
    frame = frame.sort_values(
        ["label", "path"], key=lambda s: s.map(classes.index) if s.name == "label" else s, kind="stable"
    ).reset_index(drop=True)
    return Listing(base, layout, name, classes, frame, list(notes or []))


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def audio_files(folder: Path) -> list[Path]:
    """Visible audio files directly in folder, sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def read_table(path: Path, required: set[str]) -> pd.DataFrame:
    """A metadata CSV with every value as a string; DatasetError naming missing columns."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{path}: unreadable CSV ({exc})") from exc
    missing = required - set(frame.columns)
    if missing:
        raise DatasetError(f"{path}: missing columns {sorted(missing)}; has {list(frame.columns)}")
    return frame
