"""ESC-50: 'audio/*.wav' + 'meta/esc50.csv' (filename, fold, target, category, esc10, src_file, take)."""

from __future__ import annotations

from pathlib import Path

from tasks.data.layouts.base import Listing, listing, read_table
from tasks.data.layouts.esc10 import BOOK_CLASSES
from tasks.errors import DatasetError

URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
_COLUMNS = {"filename", "fold", "target", "category", "esc10", "src_file"}


def matches(base: Path) -> bool:
    return (base / "meta" / "esc50.csv").is_file() and (base / "audio").is_dir()


def scan(base: Path, *, subset: str = "esc50") -> Listing:
    """All categories in their target order (subset 'esc50'), or the ESC-10 ones in the book's order."""
    csv = base / "meta" / "esc50.csv"
    meta = read_table(csv, _COLUMNS)
    if subset == "esc10":
        meta = meta[meta["esc10"].str.lower() == "true"]
        unknown = set(meta["category"]) - set(BOOK_CLASSES)
        if unknown:
            raise DatasetError(f"{csv}: esc10 rows with non-ESC-10 categories {sorted(unknown)}")
        classes = [c for c in BOOK_CLASSES if c in set(meta["category"])]
    else:
        pairs = meta[["target", "category"]].drop_duplicates()
        classes = list(pairs.sort_values("target", key=lambda s: s.astype(int))["category"])
    rows = [
        {
            "path": str(base / "audio" / r.filename),
            "label": r.category,
            "fold": int(r.fold),
            "group": r.src_file,
            "source_class_id": r.target,
        }
        for r in meta.itertuples(index=False)
    ]
    return listing(base, "esc50", subset, classes, rows)
