"""Content-addressed keys and atomic writes: a crashed run never leaves a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


def digest(*parts: Any, length: int = 16) -> str:
    """Stable short hash of JSON-able parts (params, other digests)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_folder(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """`folder` as write(tmp) fills it: written into a temporary folder beside it and renamed, so it is either
    whole or absent; if it exists already, nothing is written (a warm run reuses what an earlier one rendered)."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write(tmp)
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():  # not a concurrent writer's finished folder: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """np.save, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return Path(path)


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """json.dump, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return Path(path)


def save_text(path: str | os.PathLike, text: str) -> Path:
    """Write text, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def file_key(path: str | os.PathLike) -> list:
    """Identity of an input array file: its name (ingest names clip files by content digest) and size."""
    path = Path(path)
    return [path.name, path.stat().st_size]


def drop_pages(array: np.ndarray | None) -> None:
    """Unmap the pages of a memory-mapped array from this process (they stay in the page cache, written ones
    included): a pass over a file larger than RAM then holds one block, not every page it touched.

    A no-op for arrays in memory. Linux's MADV_DONTNEED on a shared file mapping keeps the data: the next read
    faults the page back in from the cache or the file."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        mapped = getattr(base, "_mmap", None)
        base = mapped if mapped is not None else getattr(base, "base", None)
    if base is not None and not base.closed and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)
