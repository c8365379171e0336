"""Augmented copies of every clip (the book's step 2): parallel, resumable per clip, cached by content."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import shutil
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from tasks.augment_ops import (  # noqa: F401 (re-exported: the public augmentation API lives here too)
    AugmentParams, add_noise, apply, augment_clip, copy_seed, draw, keep_freed_memory, shift,
    stretch_and_shift_pitch, write_shards,
)
from tasks.cache import atomic_path, digest
from tasks.errors import SoundflowError

# Bump when the transforms change, so old cached augmentations are not reused.
_CACHE_VERSION = 1


def augment_clips(clips: np.ndarray, sr: int, *, params: AugmentParams, seed: int, clip_keys: Sequence[int],
                  out_path: Path, n_jobs: int = 2, chunk_size: int = 8,
                  on_shard: Callable[[int], None] | None = None) -> Path:
    """Write (n, n_copies, L) float32 augmented copies to out_path; resumable per clip, identical for any n_jobs."""
    out_path = Path(out_path)
    if out_path.exists():
        return out_path
    if clips.ndim != 2:
        raise SoundflowError(f"augment: clips must be (n_clips, n_samples), got shape {clips.shape}")
    n, length = clips.shape
    keys = [int(k) for k in clip_keys]
    if len(keys) != n:
        raise SoundflowError(f"augment: {len(keys)} clip_keys for {n} clips; pass one key per clip (manifest order)")
    work = out_path.parent / f".{out_path.stem}.parts"
    work.mkdir(parents=True, exist_ok=True)
    shards = [work / f"{i:05d}-{keys[i]:x}.npy" for i in range(n)]
    todo = [i for i in range(n) if not shards[i].exists()]
    log = _logger()
    log.info("augment: %d clips x %d copies at %d Hz, %d to do (%d reused), %d jobs",
             n, params.n_copies, sr, len(todo), n - len(todo), n_jobs)
    done, every = n - len(todo), max(1, n // 10)
    with contextlib.closing(_run_shards(clips, todo, keys, shards, sr, params, seed, n_jobs, chunk_size)) as run:
        for i in run:
            done += 1
            if on_shard is not None:
                on_shard(i)
            if done % every == 0 or done == n:
                log.info("augment: %d/%d clips", done, n)
    with atomic_path(out_path) as tmp:
        grid = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, params.n_copies, length))
        for i, shard in enumerate(shards):
            part = np.load(shard)
            if part.shape != (params.n_copies, length):
                raise SoundflowError(f"augment: shard {shard} has shape {part.shape}, expected "
                                     f"{(params.n_copies, length)}; delete it and run again")
            grid[i] = part
        grid.flush()
        del grid
    shutil.rmtree(work, ignore_errors=True)
    return out_path


def _run_shards(clips: np.ndarray, todo: list[int], keys: list[int], shards: list[Path], sr: int,
                params: AugmentParams, seed: int, n_jobs: int, chunk_size: int) -> Iterator[int]:
    """Augment the clips in `todo`, writing one shard each; yield each index as its shard lands."""
    chunks = [todo[k:k + chunk_size] for k in range(0, len(todo), max(1, chunk_size))]
    if n_jobs <= 1 or len(chunks) < 2:
        for i in todo:
            yield from write_shards(clips[i:i + 1], [i], [keys[i]], [shards[i]], sr, params, seed)
        return
    # spawn: fork is unsafe under Prefect's threads. Each worker imports tasks.augment_ops (~1 s) and, as spawn
    # does, re-runs the __main__ script's top-level imports.
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=keep_freed_memory)
    try:
        pending: set[Future] = set()
        for chunk in chunks:  # keep two chunks per worker in flight, so memory stays bounded
            pending.add(pool.submit(write_shards, np.ascontiguousarray(clips[chunk]), chunk,
                                    [keys[i] for i in chunk], [shards[i] for i in chunk], sr, params, seed))
            if len(pending) >= 2 * n_jobs:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield from future.result()
        for future in pending:
            yield from future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def augment_file(clips_path: str | Path, sr: int, params: AugmentParams, seed: int, clip_keys: Sequence[int],
                 out_dir: str | Path, *, n_jobs: int = 2) -> Path:
    """Augment a clips .npy into out_dir/augmented-<digest>.npy, reusing it (or its finished shards) if present."""
    clips_path = Path(clips_path)
    keys = [int(k) for k in clip_keys]
    key = digest(_file_key(clips_path), params.model_dump(), int(seed), int(sr), digest(keys), _CACHE_VERSION)
    out_path = Path(out_dir) / f"augmented-{key}.npy"
    if out_path.exists():
        return out_path
    clips = np.load(clips_path, mmap_mode="r")
    return augment_clips(clips, sr, params=params, seed=seed, clip_keys=keys, out_path=out_path, n_jobs=n_jobs)


def _file_key(path: Path) -> list:
    """Identity of an input array file: its name (ingest names clip files by content digest) and size."""
    return [path.name, path.stat().st_size]


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run, the module logger elsewhere."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def manifest_clip_keys(manifest_path: str | Path) -> list[int]:
    """One stable key per clip, in clip-array order: the first 32 bits of each file's SHA-256."""
    from tasks.ingest import read_manifest  # pandas only where a manifest is read

    return [int(sha[:8], 16) for sha in read_manifest(manifest_path)["sha256"]]


@task(cache_policy=NO_CACHE)
def augment_task(clips_path: str, manifest_path: str, sr: int, params: dict, seed: int, data_dir: str,
                 n_jobs: int = 2) -> str:
    """Augment the manifest's clips under data_dir/interim (keys from the manifest's sha256) and return the path."""
    return str(augment_file(clips_path, sr, AugmentParams(**params), seed, manifest_clip_keys(manifest_path),
                            Path(data_dir) / "interim", n_jobs=n_jobs))
