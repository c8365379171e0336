"""One sub-folder per class ('class_name/*.wav'); groups from --group-pattern, else each file its own group."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.data.layouts.base import Listing, audio_files, listing, subdirs
from tasks.errors import DatasetError

NO_GROUPS = (
    "no group information: each file is its own group, so recordings that belong together (one speaker, "
    "one source recording cut into slices) may land on both sides of a fold and inflate the accuracy; "
    "pass --group-pattern REGEX (its first capture group, matched against the file name)"
)


def matches(base: Path) -> bool:
    return any(audio_files(d) for d in subdirs(base))


def scan(base: Path, *, group_pattern: str | None = None) -> Listing:
    """Classes are the sorted sub-folder names (strings, also digits or non-ASCII); no folds."""
    pattern = _compile(group_pattern)
    classes = sorted(d.name for d in subdirs(base) if audio_files(d))
    rows = []
    for label in classes:
        for path in audio_files(base / label):
            rows.append(
                {
                    "path": str(path),
                    "label": label,
                    "fold": None,
                    "group": _group(pattern, path) if pattern else f"{label}/{path.name}",
                }
            )
    notes = [] if pattern else [NO_GROUPS]
    return listing(base, "folders", base.name, classes, rows, notes)


def _compile(group_pattern: str | None) -> re.Pattern | None:
    if not group_pattern:
        return None
    try:
        pattern = re.compile(group_pattern)
    except re.error as exc:
        raise DatasetError(f"--group-pattern {group_pattern!r}: not a valid regular expression ({exc})") from exc
    if pattern.groups < 1:
        raise DatasetError(f"--group-pattern {group_pattern!r}: needs a capture group, e.g. '^([^_]+)_'")
    return pattern


def _group(pattern: re.Pattern, path: Path) -> str:
    match = pattern.search(path.name)
    if not match or not match.group(1):
        raise DatasetError(
            f"{path}: --group-pattern {pattern.pattern!r} does not match this file name "
            "(its first capture group must match every file)"
        )
    return match.group(1)
