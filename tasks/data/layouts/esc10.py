"""ESC-10 in its original layout: 'NNN - Class name/F-ID-T.ogg' (fold, Freesound source id, take)."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.data.layouts.base import Listing, audio_files, listing, subdirs
from tasks.errors import DatasetError

# The book's label order for ESC-10 (Kneusel, ch. 12), keyed by ESC-50 category names.
BOOK_CLASSES: tuple[str, ...] = (
    "rain",
    "rooster",
    "crying_baby",
    "sea_waves",
    "clock_tick",
    "sneezing",
    "dog",
    "crackling_fire",
    "helicopter",
    "chainsaw",
)
# ESC-10's own folder names ("001 - Dog bark") mapped to ESC-50 category names.
FOLDERS: dict[str, str] = {
    "Dog bark": "dog",
    "Rain": "rain",
    "Sea waves": "sea_waves",
    "Baby cry": "crying_baby",
    "Clock tick": "clock_tick",
    "Person sneeze": "sneezing",
    "Helicopter": "helicopter",
    "Chainsaw": "chainsaw",
    "Rooster": "rooster",
    "Fire crackling": "crackling_fire",
}
_DIR = re.compile(r"^(\d{3}) - (.+)$")
CLIP_NAME = re.compile(r"^(\d+)-([^-]+)-([^-.]+)")  # fold-freesoundID-take[-target]


def matches(base: Path) -> bool:
    return any(_DIR.match(d.name) for d in subdirs(base))


def parse_name(path: Path) -> tuple[int, str]:
    """(fold, Freesound source id) from 'F-ID-T.ext'; DatasetError naming the file otherwise."""
    match = CLIP_NAME.match(path.stem)
    if not match:
        raise DatasetError(f"{path}: ESC file names are 'fold-sourceid-take.ext'")
    return int(match.group(1)), match.group(2)


def scan(base: Path) -> Listing:
    """Folds and sources from the file names; the book's class order; the folder number as the dataset's id."""
    rows = []
    for folder in subdirs(base):
        match = _DIR.match(folder.name)
        if not match:
            continue
        if match.group(2) not in FOLDERS:
            raise DatasetError(f"{folder}: unknown ESC-10 class folder; expected one of {sorted(FOLDERS)}")
        label = FOLDERS[match.group(2)]
        for path in audio_files(folder):
            fold, source = parse_name(path)
            rows.append(
                {"path": str(path), "label": label, "fold": fold, "group": source, "source_class_id": match.group(1)}
            )
    return listing(base, "esc10", "esc10", list(BOOK_CLASSES), rows)
