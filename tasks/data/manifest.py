"""The manifest: one row per segment (a window cut from a recording), the only dataset table later stages read.

Recordings and segments follow Lhotse's model: a recording is a file (or a region of one, from a CSV manifest);
its segments are the windows the pipeline trains on. Rows are in the order of the clip array (row i = clip i).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.cache import atomic_path
from tasks.errors import DatasetError

# column -> dtype; `fold` is nullable (datasets without folds), `source_class_id` is the dataset's own class id
COLUMNS: dict[str, str] = {
    "recording_id": "string",
    "path": "string",
    "filename": "string",
    "start_s": "float64",
    "duration_s": "float64",
    "label": "string",
    "class_id": "int64",
    "source_class_id": "string",
    "fold": "Int64",
    "group": "string",
    "content_hash": "string",
    "sample_rate": "int64",
    "channels": "int64",
    "recording_duration_s": "float64",
    "loudness_db": "float64",  # the segment's RMS level (dBFS): near-silent windows do not vote per recording
}
REJECTED_COLUMNS = ["path", "filename", "label", "reason"]


def validate(frame: pd.DataFrame, *, where: str = "manifest") -> pd.DataFrame:
    """Check the contract (columns, types, contiguous class ids, one group and fold per recording); typed copy.

    Errors name the table, the row and its file, and say what is wrong."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{where}: missing columns {missing}")
    frame = frame[list(COLUMNS)].reset_index(drop=True)
    for col in ("label", "group", "recording_id", "path"):
        bad = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
        if bad.any():
            raise DatasetError(f"{where}: {_row(frame, bad)}: empty {col!r}")
    try:
        frame = frame.astype(COLUMNS)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: a column does not have its type ({exc})") from exc
    for col in ("duration_s", "recording_duration_s"):
        bad = ~(frame[col] > 0)
        if bad.any():
            raise DatasetError(f"{where}: {_row(frame, bad)}: {col} must be > 0")
    if (bad := frame["start_s"] < 0).any():
        raise DatasetError(f"{where}: {_row(frame, bad)}: start_s must be >= 0")
    pairs = frame[["class_id", "label"]].drop_duplicates()
    if pairs["class_id"].duplicated().any() or pairs["label"].duplicated().any():
        dup = pairs[pairs["class_id"].duplicated(keep=False) | pairs["label"].duplicated(keep=False)]
        raise DatasetError(f"{where}: class ids and labels must map one to one, got {dup.values.tolist()}")
    ids = sorted(pairs["class_id"].tolist())
    if ids != list(range(len(ids))):
        raise DatasetError(f"{where}: class ids must be 0..{len(ids) - 1}, got {ids}")
    for col in ("group", "fold", "label"):
        spread = frame.groupby("recording_id")[col].nunique(dropna=False)
        if (spread > 1).any():
            rec = spread[spread > 1].index[0]
            raise DatasetError(f"{where}: recording {rec!r} has more than one {col}; its segments must share it")
    if frame["fold"].notna().any() and frame["fold"].isna().any():
        raise DatasetError(f"{where}: {_row(frame, frame['fold'].isna())}: fold missing while other rows have one")
    return frame


def _row(frame: pd.DataFrame, mask) -> str:
    """'row i (path)' of the first row where mask holds, and how many more."""
    idx = np.flatnonzero(np.asarray(mask))
    more = f" (and {len(idx) - 1} more rows)" if len(idx) > 1 else ""
    return f"row {idx[0]} ({frame['path'].iloc[idx[0]]}){more}"


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Class names (strings) in class-id order."""
    pairs = manifest[["class_id", "label"]].drop_duplicates().sort_values("class_id")
    return [str(x) for x in pairs["label"]]


def pooling(manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(recording of each segment, its vote weight): near-silent windows do not vote for their recording."""
    from tasks.data.windows import vote_weights

    owner = manifest["recording_id"].astype(str).to_numpy()
    return owner, vote_weights(manifest["loudness_db"].to_numpy(), owner)


def has_folds(manifest: pd.DataFrame) -> bool:
    """True if the dataset brings its own folds."""
    return bool(manifest["fold"].notna().all()) and manifest["fold"].nunique() >= 2


def write_manifest(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Validate, then write atomically."""
    frame = validate(frame, where=str(path))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Load a manifest with its types (labels and groups stay strings: '0', '007')."""
    frame = pd.read_csv(
        path,
        dtype={c: ("string" if t == "string" else None) for c, t in COLUMNS.items()},
        keep_default_na=False,
        na_values={"fold": [""]},
    )
    return validate(frame, where=str(path))


def write_rejected(path: str | os.PathLike, records: list[dict]) -> Path:
    """The rejected-files table (path, filename, label, reason), written atomically."""
    with atomic_path(path) as tmp:
        pd.DataFrame(records, columns=REJECTED_COLUMNS).to_csv(tmp, index=False)
    return Path(path)


def read_rejected(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)
