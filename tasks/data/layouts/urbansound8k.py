"""UrbanSound8K: 'audio/fold1..10/' + 'metadata/UrbanSound8K.csv'; slices of one Freesound recording share fsID.

Its authors' rule: use the 10 official folds (slices of one recording stay in one fold), never reshuffle."""

from __future__ import annotations

from pathlib import Path

from tasks.data.layouts.base import Listing, listing, read_table

_CSV = Path("metadata") / "UrbanSound8K.csv"
_COLUMNS = {"slice_file_name", "fsID", "fold", "classID", "class"}


def matches(base: Path) -> bool:
    return (base / _CSV).is_file() and (base / "audio").is_dir()


def scan(base: Path) -> Listing:
    """Classes in classID order (ids kept as source_class_id), group = fsID, fold from the CSV."""
    meta = read_table(base / _CSV, _COLUMNS)
    pairs = meta[["classID", "class"]].drop_duplicates()
    classes = list(pairs.sort_values("classID", key=lambda s: s.astype(int))["class"])
    rows = [
        {
            "path": str(base / "audio" / f"fold{fold}" / name),
            "label": label,
            "fold": int(fold),
            "group": fsid,
            "source_class_id": class_id,
        }
        for name, fsid, fold, class_id, label in meta[["slice_file_name", "fsID", "fold", "classID", "class"]].values
    ]
    return listing(base, "urbansound8k", "urbansound8k", classes, rows)
