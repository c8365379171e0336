"""Augmented copies of every clip (the book's step 2): parallel, resumable per clip, cached by content."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.augment.ops import (  # noqa: F401 (re-exported: the public augmentation API lives here too)
    AugmentParams,
    add_noise,
    apply,
    augment_clip,
    copy_seed,
    draw,
    keep_freed_memory,
    shift,
    stretch_and_shift_pitch,
    write_rows,
)
from tasks.cache import digest, file_key
from tasks.errors import SoundflowError
from tasks.logs import run_logger

# Bump when the transforms change, so old cached augmentations are not reused.
_CACHE_VERSION = 1


def augment_clips(
    clips: np.ndarray,
    sr: int,
    *,
    params: AugmentParams,
    seed: int,
    clip_keys: Sequence[int],
    out_path: Path,
    n_jobs: int = 2,
    chunk_size: int = 4,
    min_copies_per_worker: int = 500,
    on_clip: Callable[[int], None] | None = None,
) -> Path:
    """Write (n, n_copies, L) float32 augmented copies to out_path; resumable per clip, identical for any n_jobs."""
    # Rows go straight into a hidden partial .npy beside out_path, one done-marker per clip in a work dir; a
    # restart redoes only unmarked clips, and the finished file is published by one rename (no 3 GB copy).
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
    partial = work / "partial.npy"
    markers = [work / f"{i:05d}-{keys[i]:x}.done" for i in range(n)]
    _open_partial(partial, (n, params.n_copies, length))
    todo = [i for i in range(n) if not markers[i].exists()]
    log = run_logger(__name__)
    done, every = n - len(todo), max(1, n // 10)
    # A spawned worker costs ~1 s of CPU to start (~200 copies' worth): small jobs stay in this process.
    workers = min(n_jobs - 1, len(todo) * params.n_copies // max(1, min_copies_per_worker))
    log.info(
        "augment: %d clips x %d copies at %d Hz, %d to do (%d reused), %d worker processes + this one",
        n,
        params.n_copies,
        sr,
        len(todo),
        n - len(todo),
        max(0, workers),
    )
    run = _run_rows(clips, todo, keys, partial, markers, sr, params, seed, workers, chunk_size)
    with contextlib.closing(run):
        for i in run:
            done += 1
            if on_clip is not None:
                on_clip(i)
            if done % every == 0 or done == n:
                log.info("augment: %d/%d clips", done, n)
    os.replace(partial, out_path)
    shutil.rmtree(work, ignore_errors=True)
    return out_path


def _open_partial(partial: Path, shape: tuple[int, int, int]) -> None:
    """Reuse the partial array if it has the right shape; otherwise start it afresh and forget all markers."""
    try:
        if np.load(partial, mmap_mode="r").shape == shape:
            return
    except (OSError, ValueError):  # missing, or cut short while being created
        pass
    shutil.rmtree(partial.parent, ignore_errors=True)
    partial.parent.mkdir(parents=True)
    grid = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
    del grid


def _run_rows(
    clips: np.ndarray,
    todo: list[int],
    keys: list[int],
    partial: Path,
    markers: list[Path],
    sr: int,
    params: AugmentParams,
    seed: int,
    workers: int,
    chunk_size: int,
) -> Iterator[int]:
    """Augment the clips in `todo` into their rows; yield each index once its row is written and marked."""

    def job(chunk: list[int]) -> tuple:
        return (
            np.ascontiguousarray(clips[chunk]),
            chunk,
            [keys[i] for i in chunk],
            partial,
            [markers[i] for i in chunk],
            sr,
            params,
            seed,
        )

    queue = deque(todo)
    if workers < 1:
        while queue:
            yield from write_rows(*job([queue.popleft()]))
        return
    # Workers take chunks from the front; this process takes single clips from the back meanwhile, so the time
    # a worker needs to start (importing tasks.augment.ops and, as spawn does, the __main__ script) is not lost.
    # spawn, because fork is unsafe under Prefect's threads.
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=keep_freed_memory
    )
    try:
        pending: set[Future] = set()
        while queue or pending:
            while queue and len(pending) < 2 * workers:  # two chunks in flight per worker
                chunk = [queue.popleft() for _ in range(min(chunk_size, len(queue)))]
                pending.add(pool.submit(write_rows, *job(chunk)))
            finished = {f for f in pending if f.done()}
            if not finished and queue:
                yield from write_rows(*job([queue.pop()]))
                continue
            if not finished:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            pending -= finished
            for future in finished:
                yield from future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def augment_file(
    clips_path: str | Path,
    sr: int,
    params: AugmentParams,
    seed: int,
    clip_keys: Sequence[int],
    out_dir: str | Path,
    *,
    n_jobs: int = 2,
) -> Path:
    """Augment a clips .npy into out_dir/augmented-<digest>.npy, reusing it (or its finished rows) if present."""
    clips_path = Path(clips_path)
    keys = [int(k) for k in clip_keys]
    key = digest(file_key(clips_path), params.model_dump(), int(seed), int(sr), digest(keys), _CACHE_VERSION)
    out_path = Path(out_dir) / f"augmented-{key}.npy"
    if out_path.exists():
        return out_path
    clips = np.load(clips_path, mmap_mode="r")
    return augment_clips(clips, sr, params=params, seed=seed, clip_keys=keys, out_path=out_path, n_jobs=n_jobs)


def manifest_clip_keys(manifest_path: str | Path) -> list[int]:
    """One stable key per segment, in clip-array order, from its file's SHA-256 and its start time."""
    import pandas as pd  # only where a manifest is read

    frame = pd.read_csv(manifest_path, usecols=["content_hash", "start_s"], dtype={"content_hash": str})
    # the file's hash (as for one-window clips before windowing) mixed with the window's start in ms
    return [int(sha[:8], 16) ^ round(1000 * start) for sha, start in zip(frame["content_hash"], frame["start_s"])]


@task(cache_policy=NO_CACHE, task_run_name="augmented copies")
def augment_task(
    clips_path: str, manifest_path: str, sr: int, params: AugmentParams, seed: int, data_dir: str, n_jobs: int = 2
) -> str:
    """Augment the manifest's clips under data_dir/interim (keys from the manifest's sha256) and return the path."""
    return str(
        augment_file(
            clips_path,
            sr,
            params,
            seed,
            manifest_clip_keys(manifest_path),
            Path(data_dir) / "interim",
            n_jobs=n_jobs,
        )
    )
