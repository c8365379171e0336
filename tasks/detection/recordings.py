"""The recordings an analysis covers: audio files under the paths given, each with its content hash (taken from the
journal when the file's size and mtime are unchanged) and what is already done."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.cache import file_sha256
from tasks.data.layouts.base import AUDIO_EXTENSIONS
from tasks.detection.journal import done
from tasks.errors import DatasetError
from tasks.records import Scored


def list_recordings(paths: Sequence[str | os.PathLike], *, recursive: bool = False) -> list[str]:
    """Audio files given, and those in the folders given (their sub-folders too when recursive), sorted per folder;
    each path as the user wrote it (joined with the folder's). A path that does not exist is an error."""
    out: list[str] = []
    for given in paths:
        p = Path(given)
        if p.is_file():
            out.append(str(given))
        elif p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
            out += sorted(
                str(f)
                for f in found
                if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS and not f.name.startswith(".")
            )
        else:
            raise DatasetError(f"{given}: no such file or folder (detect takes recordings and folders of them)")
    if not out:
        where = ", ".join(map(str, paths))
        raise DatasetError(
            f"no recordings ({', '.join(AUDIO_EXTENSIONS)}) in {where}"
            + ("" if recursive else "; pass --recursive to look in sub-folders")
        )
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Planned:
    """One recording of the analysis: its hash, and its finished analysis if the journal has one."""

    file: str
    sha256: str
    size: int
    mtime_ns: int
    finished: Scored | None


def plan(files: Sequence[str], journal: Mapping[tuple[str, str], Scored], model_key: str) -> list[Planned]:
    """Each file's content hash (re-used from a journal line of the same path, size and mtime) and its finished
    analysis by this model key, if any."""
    known = {(e.file, e.size, e.mtime_ns): e.sha256 for e in journal.values() if e.size}
    out = []
    for file in files:
        st = os.stat(file)
        sha = known.get((file, st.st_size, st.st_mtime_ns)) or file_sha256(file)
        out.append(Planned(file, sha, st.st_size, st.st_mtime_ns, done(journal, sha, model_key)))
    return out
