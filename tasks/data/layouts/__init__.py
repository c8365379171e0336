"""Dataset layouts: one small adapter each, all producing the same recordings table (tasks/data/layouts/base.py)."""

# No `from __future__ import annotations` here: it would bind the name `annotations` in this package and hide the
# annotations adapter (tasks/data/layouts/annotations.py) from `from tasks.data.layouts import annotations`.
import os
from pathlib import Path

from tasks.data.layouts import annotations, csv_manifest, esc10, esc50, folders, urbansound8k
from tasks.data.layouts.base import Listing, subdirs
from tasks.errors import DatasetError

# detection order: the most specific layout first
ADAPTERS = {
    "esc50": esc50,
    "urbansound8k": urbansound8k,
    "esc10": esc10,
    "annotations": annotations,
    "folders": folders,
    "csv": csv_manifest,
}
DATASETS = ("auto", "esc10", "esc50", "urbansound8k", "annotations", "folders", "csv")
_HELP = (
    "expected one of: ESC-10 ('NNN - Class name/F-ID-T.ogg'), ESC-50 ('audio/' + 'meta/esc50.csv'), "
    "UrbanSound8K ('audio/fold1..10/' + 'metadata/UrbanSound8K.csv'), one folder per class "
    "('class_name/*.wav'), annotated recordings ('rec.wav' + 'rec.selections.txt' (Raven) or 'rec.txt' "
    "(Audacity), or a CSV with columns path,onset,offset,label), or a CSV manifest with columns path,label"
)


def detect(root: str | os.PathLike) -> tuple[str, Path]:
    """(layout name, dataset folder or CSV file), looking inside one wrapping folder if needed."""
    root = Path(root).absolute()
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return ("annotations" if annotations.matches(root) else "csv"), root
        raise DatasetError(f"{root}: not a folder or a .csv manifest; {_HELP}")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder or file; {_HELP}")
    base = root
    for _ in range(2):
        for name in ("esc50", "urbansound8k", "esc10", "annotations", "folders"):
            if ADAPTERS[name].matches(base):
                return name, base
        inner = subdirs(base)
        if len(inner) != 1:
            break
        base = inner[0]
    raise DatasetError(f"{root}: no audio dataset found; {_HELP}")


def scan(
    root: str | os.PathLike,
    *,
    dataset: str = "auto",
    group_pattern: str | None = None,
    window_s: float | str = "auto",
    hop_s: float | None = None,
    label_column: str | None = None,
    min_label_overlap: float = 0.5,
    background_ratio: float = 1.0,
    seed: int = 0,
) -> Listing:
    """The recordings of a dataset (no decoding), by its detected layout; `dataset` may ask for a subset. The
    windowing and labelling options are for the annotations layout (it cuts its own windows); others ignore them."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    layout, base = detect(root)
    wanted = layout if dataset == "auto" else dataset
    if wanted == "esc10" and layout == "esc50":
        listing = esc50.scan(base, subset="esc10")
    elif wanted == "folders" and layout == "esc10":
        listing = folders.scan(base, group_pattern=group_pattern)
    elif wanted != layout:
        raise DatasetError(f"{base}: found the {layout} layout, not {wanted!r}; use --dataset {layout} or auto")
    elif layout == "esc50":
        listing = esc50.scan(base, subset="esc50")
    elif layout == "folders":
        listing = folders.scan(base, group_pattern=group_pattern)
    elif layout == "annotations":
        listing = annotations.scan(
            base,
            window_s=window_s,
            hop_s=hop_s,
            label_column=label_column,
            min_label_overlap=min_label_overlap,
            background_ratio=background_ratio,
            seed=seed,
            group_pattern=group_pattern,
        )
    else:
        listing = ADAPTERS[layout].scan(base)
    if group_pattern and wanted not in ("folders", "annotations"):
        listing.notes.append(
            f"--group-pattern is used by the folders and annotations layouts only; {wanted} brings its own groups"
        )
    if label_column and wanted != "annotations":
        listing.notes.append(f"--label-column is used by the annotations layout only (Raven tables); not by {wanted}")
    if listing.recordings.empty:
        raise DatasetError(f"{base}: no audio files found; {_HELP}")
    return listing
