"""Decode a scanned dataset once: recordings -> fixed-length segments (clips.npy) + the manifest, cached."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import atomic_path, digest, file_sha256, save_json
from tasks.data.audio import decode_region, probe
from tasks.data.layouts import scan
from tasks.data.layouts.base import Listing
from tasks.data.manifest import COLUMNS, has_folds, read_manifest, read_rejected, write_manifest, write_rejected
from tasks.data.windows import auto_window_s, cut, loudness_db
from tasks.errors import AudioDecodeError, DatasetError, SoundflowError
from tasks.logs import run_logger
from tasks.records import Dataset

# Bump when decoding or windowing changes, so old cached clip arrays are not reused.
_CACHE_VERSION = 2
_BLOCK = 256  # segments copied per block when finishing the clip array


def build(
    root: str | os.PathLike,
    *,
    dataset: str = "auto",
    group_pattern: str | None = None,
    sr: int,
    window_s: float | str = 5.0,
    hop_s: float | None = None,
    min_duration_s: float = 0.0,
    out_dir: Path,
    n_jobs: int = 2,
    label_column: str | None = None,
    min_label_overlap: float = 0.5,
    background_ratio: float = 1.0,
    seed: int = 0,
) -> Dataset:
    """Scan, hash, decode and window a dataset under out_dir (reused when nothing changed); paths and counts.

    A layout that cuts its own windows (annotations: label_column, min_label_overlap, background_ratio and seed
    choose them) lists each as a region of its window_s: that region becomes exactly one segment."""
    log = run_logger(__name__)
    listing = scan(
        root,
        dataset=dataset,
        group_pattern=group_pattern,
        window_s=window_s,
        hop_s=hop_s,
        label_column=label_column,
        min_label_overlap=min_label_overlap,
        background_ratio=background_ratio,
        seed=seed,
    )
    recs = _with_ids(listing)
    log.info(
        "dataset: found the %s layout at %s (%s): %d classes, %d recordings",
        listing.layout,
        listing.base,
        listing.name,
        len(listing.classes),
        len(recs),
    )
    present = recs[[Path(p).is_file() for p in recs["path"]]]
    hashes = {p: file_sha256(p) for p in present["path"].unique()}  # once per file, not per region
    own_windows = listing.window_s is not None
    if own_windows:
        window_s, hop_s = float(listing.window_s or 0), listing.hop_s
        log.info("ingest: %s windows of %g s every %g s (%s)", listing.layout, window_s, hop_s, listing.window_reason)
    elif window_s == "auto":
        window_s, why = auto_window_s(_durations(present, hashes, Path(out_dir)))
        log.info("ingest: --window-s auto: %g s (%s)", window_s, why)
    window_s = float(window_s)
    hop_s = hop_s or window_s
    key = digest(
        sorted(
            zip(
                present["recording_id"],
                present["path"].map(hashes),
                present["label"],
                present["fold"].astype(str),
                present["group"],
                present["start_s"].astype(str),
                present["end_s"].astype(str),
            )
        ),
        listing.classes,
        listing.layout,
        sr,
        float(window_s),
        float(hop_s),
        float(min_duration_s),
        _CACHE_VERSION,
        *([listing.counts] if listing.counts else []),  # what dataset.json says of annotations (dropped windows)
    )
    out_dir = Path(out_dir)
    paths = {
        kind: out_dir / f"{kind}-{listing.name}-{key}.{ext}"
        for kind, ext in (("manifest", "csv"), ("clips", "npy"), ("rejected", "csv"), ("dataset", "json"))
    }
    if all(p.exists() for p in paths.values()):
        _refresh_paths(paths["manifest"], recs)
        log.info("ingest: reusing %s (%d recordings, digest %s)", paths["manifest"].name, len(recs), key)
    else:
        rejected = [
            _rejected(r, "file not found (listed in the dataset's metadata)")
            for r in recs[~recs["path"].isin(hashes)].to_dict("records")
        ]
        log.info(
            "ingest: decoding %d recordings from %s at %d Hz into %g-s windows (hop %g s, %d jobs)",
            len(present),
            listing.base,
            sr,
            window_s,
            hop_s,
            n_jobs,
        )
        segments = _decode_to(
            paths["clips"],
            present,
            hashes,
            rejected,
            listing.classes,
            sr=sr,
            window_s=window_s,
            hop_s=hop_s,
            min_duration_s=min_duration_s,
            n_jobs=n_jobs,
            where=listing.base,
            rejected_csv=paths["rejected"],
            one_per_region=own_windows,
        )
        write_rejected(paths["rejected"], rejected)
        save_json(
            paths["dataset"],
            {
                "layout": listing.layout,
                "name": listing.name,
                "base": str(listing.base),
                "classes": listing.classes,
                "notes": listing.notes,
                "sample_rate": sr,
                "window_s": window_s,
                "hop_s": hop_s,
                "min_duration_s": min_duration_s,
                **({"annotations": listing.counts} if listing.counts else {}),
            },
        )
        write_manifest(paths["manifest"], segments)  # last: its presence marks a complete build
        log.info(
            "ingest: %d segments from %d recordings, %d rejected -> %s",
            len(segments),
            segments["recording_id"].nunique(),
            len(rejected),
            paths["manifest"],
        )
    for note in listing.notes:
        log.warning("dataset: %s", note)
    manifest = read_manifest(paths["manifest"])
    return Dataset(
        name=listing.name,
        layout=listing.layout,
        manifest=str(paths["manifest"]),
        clips=str(paths["clips"]),
        rejected=str(paths["rejected"]),
        info=str(paths["dataset"]),
        digest=key,
        n_clips=len(manifest),
        n_recordings=int(manifest["recording_id"].nunique()),
        sample_rate=int(sr),
        window_s=float(window_s),
        hop_s=float(hop_s),
        n_rejected=len(read_rejected(paths["rejected"])),
        has_folds=has_folds(manifest),
        notes=tuple(listing.notes),
    )


def _durations(recs: pd.DataFrame, hashes: dict, out_dir: Path) -> list[float]:
    """Each recording's (or CSV region's) duration in seconds from its header, cached by content hash; files
    that cannot be read are left out (decoding rejects them later, with the reason)."""
    cache_path = out_dir / "durations.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    out, new = [], {}
    for path, start, end in zip(recs["path"], recs["start_s"], recs["end_s"]):
        h = hashes[path]
        if h not in cache and h not in new:
            try:
                new[h] = probe(path)["duration_s"]
            except SoundflowError:
                continue
        full = cache.get(h, new.get(h))
        lo = 0.0 if np.isnan(start) else float(start)
        hi = full if np.isnan(end) else min(float(end), full)
        out.append(hi - lo)
    if new:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_json(cache_path, {**cache, **new})
    return out


def _with_ids(listing: Listing) -> pd.DataFrame:
    """Recordings with a stable id: the path relative to the dataset (plus the region, for CSV regions)."""
    recs = listing.recordings.copy()
    root = listing.base.parent if listing.base.is_file() else listing.base

    def rec_id(row) -> str:
        path = Path(row.path)
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
        if np.isnan(row.start_s) and np.isnan(row.end_s):
            return rel
        return (
            f"{rel}@{0 if np.isnan(row.start_s) else row.start_s:g}-{'' if np.isnan(row.end_s) else f'{row.end_s:g}'}"
        )

    recs["recording_id"] = [rec_id(r) for r in recs.itertuples(index=False)]
    dup = recs["recording_id"].duplicated()
    if dup.any():
        raise DatasetError(f"{listing.base}: recording {recs['recording_id'][dup].iloc[0]!r} is listed twice")
    recs["class_id"] = recs["label"].map(listing.classes.index)
    return recs


def _decode_to(
    clips_npy: Path,
    recs: pd.DataFrame,
    hashes: dict,
    rejected: list[dict],
    classes: list[str],
    *,
    sr: int,
    window_s: float,
    hop_s: float,
    min_duration_s: float,
    n_jobs: int,
    where: Path,
    rejected_csv: Path,
    one_per_region: bool = False,
) -> pd.DataFrame:
    """Decode recordings in parallel, streaming their windows to a scratch file; the segment rows.

    one_per_region: each row is a region one window long (a layout's own windows): cut it as exactly one segment
    (hop = window, whatever the listing's hop), and keep a quiet one (a silent gap of a readable recording)."""
    log = run_logger(__name__)
    window, hop = round(sr * window_s), max(1, round(sr * hop_s))
    if one_per_region:
        hop = window
    rows: list[dict] = []
    clips_npy.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=clips_npy.parent, prefix=f".{clips_npy.stem}.", suffix=".raw")
    records = recs.to_dict("records")
    job = partial(
        _segments, sr=sr, window=window, hop=hop, min_samples=round(sr * min_duration_s), allow_silent=one_per_region
    )
    try:
        with os.fdopen(fd, "wb") as raw:
            results = _map(job, [(r["path"], r["start_s"], r["end_s"]) for r in records], n_jobs=n_jobs)
            for i, (rec, (segs, starts, info, reason)) in enumerate(zip(records, results)):
                if reason is not None:
                    rejected.append(_rejected(rec, reason))
                else:
                    raw.write(np.ascontiguousarray(segs, np.float32).tobytes())
                    rows += _segment_rows(rec, segs, starts, info, hashes[rec["path"]], sr=sr, window=window)
                if (i + 1) % max(1, len(records) // 10) == 0:
                    log.info("ingest: decoded %d/%d recordings", i + 1, len(records))
        segments = pd.DataFrame(rows, columns=list(COLUMNS))
        empty = [c for c in classes if c not in set(segments["label"])]
        if empty:
            write_rejected(rejected_csv, rejected)
            reasons = "; ".join(f"{Path(r['path']).name}: {r['reason']}" for r in rejected[:5])
            raise DatasetError(
                f"{where}: no usable recordings for classes {empty} (rejected: {reasons}; full list in {rejected_csv})"
            )
        _finish_npy(Path(scratch), clips_npy, n_rows=len(segments), window=window)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return segments


def _segments(
    path: str,
    start_s: float,
    end_s: float,
    *,
    sr: int,
    window: int,
    hop: int,
    min_samples: int,
    allow_silent: bool = False,
) -> tuple[np.ndarray | None, list[int] | None, dict | None, str | None]:
    """(windows, start samples, probe info, None) for one recording, or (None, None, None, reason)."""
    try:
        y, info = decode_region(path, sr=sr, start_s=start_s, end_s=end_s, allow_silent=allow_silent)
    except AudioDecodeError as exc:
        return None, None, None, exc.reason
    if len(y) < min_samples:
        return None, None, None, f"shorter ({len(y) / sr:.2f} s) than --min-duration-s ({min_samples / sr:g} s)"
    segs, starts = cut(y, window=window, hop=hop)
    info["n_samples"] = len(y)
    return segs, starts, info, None


def _segment_rows(
    rec: dict, segs: np.ndarray, starts: list[int], info: dict, content_hash: str, *, sr: int, window: int
) -> list[dict]:
    offset = 0.0 if np.isnan(rec["start_s"]) else float(rec["start_s"])
    levels = loudness_db(segs)
    return [
        {
            "recording_id": rec["recording_id"],
            "path": rec["path"],
            "filename": Path(rec["path"]).name,
            "start_s": offset + s / sr,
            "duration_s": min(window, info["n_samples"] - s) / sr,
            "label": rec["label"],
            "class_id": rec["class_id"],
            "source_class_id": rec["source_class_id"],
            "fold": rec["fold"],
            "group": rec["group"],
            "content_hash": content_hash,
            "sample_rate": info["sample_rate"],
            "channels": info["channels"],
            "recording_duration_s": info["duration_s"],
            "loudness_db": float(level),
        }
        for s, level in zip(starts, levels)
    ]


def _finish_npy(raw: Path, dest: Path, *, n_rows: int, window: int) -> None:
    """Turn the scratch file of float32 rows into dest (.npy) atomically: a header, then the bytes copied a
    block at a time (plain reads and writes, so no page of either file is held by this process)."""
    if raw.stat().st_size != n_rows * window * 4:
        raise SoundflowError(f"{raw}: {raw.stat().st_size} bytes for {n_rows} windows of {window} samples")
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
        "fortran_order": False,
        "shape": (n_rows, window),
    }
    with atomic_path(dest) as tmp, open(raw, "rb") as src, open(tmp, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(src, out, _BLOCK * window * 4)


def _map(job, args: list[tuple], *, n_jobs: int) -> Iterator[tuple]:
    """job over args, in order, in n_jobs worker processes."""
    if n_jobs <= 1 or len(args) < 2:
        return (job(*a) for a in args)
    # loky workers neither fork Prefect's/TF's threads nor re-run the caller's __main__, and are reused.
    return Parallel(n_jobs=n_jobs, backend="loky", return_as="generator", batch_size=8)(delayed(job)(*a) for a in args)


def _rejected(rec: dict, reason: str) -> dict:
    return {"path": rec["path"], "filename": Path(rec["path"]).name, "label": rec["label"], "reason": reason}


def _refresh_paths(manifest_csv: Path, recs: pd.DataFrame) -> None:
    """Same content found at another place: point the cached manifest at the current files."""
    where = dict(zip(recs["recording_id"], recs["path"]))
    frame = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    paths = [where.get(r, p) for r, p in zip(frame["recording_id"], frame["path"])]
    if paths != list(frame["path"]):
        frame["path"] = paths
        with atomic_path(manifest_csv) as tmp:
            frame.to_csv(tmp, index=False)


def dataset_info(data: Dataset) -> dict:
    """The dataset record written beside the manifest (layout, name, classes, notes, windowing)."""
    return json.loads(Path(data.info).read_text())


@task(cache_policy=NO_CACHE)
def ingest(
    dataset_root: str,
    *,
    dataset: str,
    sr: int,
    window_s: float | str,
    hop_s: float | None,
    min_duration_s: float,
    group_pattern: str | None,
    data_dir: str,
    n_jobs: int,
    label_column: str | None = None,
    min_label_overlap: float = 0.5,
    background_ratio: float = 1.0,
    seed: int = 0,
) -> Dataset:
    """Build (or reuse) the manifest and segment array under data_dir/interim; their paths, counts and the window
    used (window_s "auto": from the recordings' durations, or the annotated events' for annotated recordings)."""
    return build(
        dataset_root,
        dataset=dataset,
        group_pattern=group_pattern,
        sr=sr,
        window_s=window_s,
        hop_s=hop_s,
        min_duration_s=min_duration_s,
        out_dir=Path(data_dir) / "interim",
        n_jobs=n_jobs,
        label_column=label_column,
        min_label_overlap=min_label_overlap,
        background_ratio=background_ratio,
        seed=seed,
    )
