"""The analysis journal: one JSON line per finished recording (its content hash and the model that scored it), so
an interrupted or repeated analysis skips what is done and a scheduled one analyses only what is new."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from tasks.records import Scored

JOURNAL_FILE = "journal.jsonl"


def read(path: str | os.PathLike) -> dict[tuple[str, str], Scored]:
    """The journal's entries by (content hash, model key); the last line of a key wins; a line cut short by a killed
    process is ignored (that recording is analysed again)."""
    entries: dict[tuple[str, str], Scored] = {}
    p = Path(path)
    if not p.is_file():
        return entries
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            entry = Scored(**json.loads(line))
        except (ValueError, TypeError):
            continue
        entries[entry.key] = entry
    return entries


def done(entries: Mapping[tuple[str, str], Scored], sha256: str, model_key: str) -> Scored | None:
    """The finished analysis of this content by this model, if its scores are still on disk."""
    entry = entries.get((sha256, model_key))
    if entry is None or entry.status != "ok" or not Path(entry.scores).is_file():
        return None
    return entry


def append(path: str | os.PathLike, entry: Scored) -> None:
    """Add one line and make it durable before going on (one writer: the flow's process)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    record = asdict(entry) | {"finished_at": entry.finished_at or time.time()}
    with open(p, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
