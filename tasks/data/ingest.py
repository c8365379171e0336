"""Find the dataset (folder, zip or URL), list its clips in a manifest, and decode them once into a cached array."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.logs import run_logger
from tasks.data.audio import load_checked
from tasks.cache import atomic_path, digest, file_sha256
from tasks.config import BOOK_CLASSES, ESC10_FOLDERS, ESC50_URL
from tasks.errors import DatasetError, DownloadError

AUDIO_EXTENSIONS = (".wav", ".ogg", ".flac", ".mp3")
DATASETS = ("esc10", "esc50", "folders")
MANIFEST_COLUMNS = ["path", "filename", "class_name", "class_id", "fold", "source_id", "take",
                    "sample_rate", "channels", "duration_s", "sha256"]
REJECTED_COLUMNS = ["path", "filename", "class_name", "reason"]
MARKER = ".soundflow-extracted.json"
# Bump when decoding changes, so old cached clip arrays are not reused.
_CACHE_VERSION = 1
_ESC10_DIR = re.compile(r"^\d{3} - (.+)$")
_CLIP_NAME = re.compile(r"^(\d+)-([^-]+)-([^-.]+)")  # fold-freesoundID-take[-target]
_LAYOUT_HELP = ("expected one of: ESC-10 ('NNN - Class name/F-ID-T.ogg'), ESC-50 ('audio/*.wav' + "
                "'meta/esc50.csv'), or one folder per class ('class_name/*.wav|ogg|flac|mp3')")
_CHUNK = 1 << 20


# ---------------------------------------------------------------- layouts and scanning

def detect_layout(root: str | os.PathLike) -> tuple[str, Path]:
    """("esc10" | "esc50" | "folders", dataset folder), looking inside one wrapping folder if needed."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; {_LAYOUT_HELP}")
    base = root
    for _ in range(2):
        if (base / "meta" / "esc50.csv").is_file() and (base / "audio").is_dir():
            return "esc50", base
        subdirs = _subdirs(base)
        if any(_ESC10_DIR.match(d.name) for d in subdirs):
            return "esc10", base
        if any(_audio_files(d) for d in subdirs):
            return "folders", base
        if len(subdirs) != 1 or _audio_files(base):
            break
        base = subdirs[0]
    raise DatasetError(f"{root}: no audio dataset found; {_LAYOUT_HELP}")


def scan(root: str | os.PathLike, *, dataset: str = "esc10") -> tuple[list[dict], list[str], Path]:
    """(rows sorted by (class_id, filename), class names in id order, dataset folder); no decoding."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    layout, base = detect_layout(root)
    if layout == "esc50":
        rows, classes = _scan_esc50(base, dataset=dataset)
    elif layout == "esc10":
        if dataset != "esc10":
            raise DatasetError(f"{base}: ESC-10 folders hold only ESC-10; use dataset='esc10'")
        rows, classes = _scan_esc10(base)
    else:
        rows, classes = _scan_folders(base, dataset=dataset)
    if not rows:
        raise DatasetError(f"{base}: no audio files found; {_LAYOUT_HELP}")
    rows.sort(key=lambda r: (r["class_id"], r["filename"]))
    return rows, classes, base


def _scan_esc10(base: Path) -> tuple[list[dict], list[str]]:
    rows = []
    for folder in _subdirs(base):
        match = _ESC10_DIR.match(folder.name)
        if not match:
            continue
        if match.group(1) not in ESC10_FOLDERS:
            raise DatasetError(f"{folder}: unknown ESC-10 class folder; expected one of {sorted(ESC10_FOLDERS)}")
        name = ESC10_FOLDERS[match.group(1)]
        for path in _audio_files(folder):
            rows.append(_row(path, name, BOOK_CLASSES.index(name), *_parse_name(path.stem)))
    return rows, list(BOOK_CLASSES)


def _scan_esc50(base: Path, *, dataset: str) -> tuple[list[dict], list[str]]:
    csv = base / "meta" / "esc50.csv"
    meta = pd.read_csv(csv, dtype={"filename": str, "src_file": str, "take": str, "category": str})
    missing = {"filename", "fold", "target", "category", "esc10", "src_file", "take"} - set(meta.columns)
    if missing:
        raise DatasetError(f"{csv}: missing columns {sorted(missing)}")
    if dataset == "esc10":
        meta = meta[meta["esc10"].astype(str).str.lower() == "true"]
        unknown = set(meta["category"]) - set(BOOK_CLASSES)
        if unknown:
            raise DatasetError(f"{csv}: esc10 rows with non-ESC-10 categories {sorted(unknown)}")
        classes = list(BOOK_CLASSES)
        ids = {name: BOOK_CLASSES.index(name) for name in classes}
    elif dataset == "esc50":
        pairs = meta[["target", "category"]].drop_duplicates().sort_values("target")
        classes = list(pairs["category"])
        ids = dict(zip(pairs["category"], pairs["target"].astype(int)))
    else:
        raise DatasetError(f"{base}: ESC-50 layout; use dataset='esc10' or 'esc50', not {dataset!r}")
    rows = [_row(base / "audio" / r.filename, r.category, ids[r.category], int(r.fold), str(r.src_file), str(r.take))
            for r in meta.itertuples(index=False)]
    return rows, classes


def _scan_folders(base: Path, *, dataset: str) -> tuple[list[dict], list[str]]:
    classes = sorted(d.name for d in _subdirs(base) if _audio_files(d))
    if dataset == "esc10":
        if set(classes) != set(BOOK_CLASSES):
            raise DatasetError(f"{base}: dataset='esc10' needs folders named {list(BOOK_CLASSES)}, "
                               f"found {classes}; use dataset='folders' for your own classes")
        classes = list(BOOK_CLASSES)
    elif dataset == "esc50":
        raise DatasetError(f"{base}: dataset='esc50' needs meta/esc50.csv; use dataset='folders'")
    rows = []
    for class_id, name in enumerate(classes):
        for path in _audio_files(base / name):
            _, source_id, take = _parse_name(path.stem)
            rows.append(_row(path, name, class_id, 0, source_id, take))
    return rows, classes


def _row(path: Path, class_name: str, class_id: int, fold: int, source_id: str, take: str) -> dict:
    return {"path": str(path.absolute()), "filename": path.name, "class_name": class_name,
            "class_id": int(class_id), "fold": int(fold), "source_id": source_id, "take": take}


def _parse_name(stem: str) -> tuple[int, str, str]:
    """(fold, Freesound id, take) from 'F-ID-T'; (0, stem, '') for other names."""
    match = _CLIP_NAME.match(stem)
    return (int(match.group(1)), match.group(2), match.group(3)) if match else (0, stem, "")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file())


# ---------------------------------------------------------------- manifest and clips

def build_manifest(root: Path, *, dataset: str = "esc10", sr: int, duration_s: float = 5.0,
                   out_dir: Path, n_jobs: int = 2) -> tuple[Path, Path, Path]:
    """Scan, hash and decode a dataset into (manifest.csv, clips.npy, rejected.csv) under out_dir, cached."""
    return _build(root, dataset=dataset, sr=sr, duration_s=duration_s, out_dir=out_dir, n_jobs=n_jobs)[1]


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Load a manifest or rejected table with ids kept as strings (source ids like '100032')."""
    return pd.read_csv(path, dtype={"filename": str, "source_id": str, "take": str, "sha256": str,
                                    "reason": str}, keep_default_na=False)


def _build(root: Path, *, dataset: str, sr: int, duration_s: float, out_dir: Path,
           n_jobs: int) -> tuple[str, tuple[Path, Path, Path]]:
    """build_manifest, also returning the cache digest."""
    log = run_logger(__name__)
    rows, classes, base = scan(root, dataset=dataset)
    present = [r for r in rows if Path(r["path"]).is_file()]
    hashes = {r["path"]: file_sha256(r["path"]) for r in present}
    listing = sorted((Path(p).relative_to(base).as_posix(), h) for p, h in hashes.items())
    key = digest(listing, dataset, sr, float(duration_s), _CACHE_VERSION)
    out_dir = Path(out_dir)
    outputs = tuple(out_dir / f"{kind}-{dataset}-{key}.{ext}"
                    for kind, ext in (("manifest", "csv"), ("clips", "npy"), ("rejected", "csv")))
    manifest_csv, clips_npy, rejected_csv = outputs
    if all(p.exists() for p in outputs):
        _refresh_paths(manifest_csv, rejected_csv, rows)
        log.info("ingest: reusing %s (%d files, digest %s)", manifest_csv.name, len(rows), key)
        return key, outputs

    rejected = [{**_pick(r, REJECTED_COLUMNS), "reason": "listed in meta/esc50.csv but missing"}
                for r in rows if r["path"] not in hashes]
    log.info("ingest: decoding %d clips from %s at %d Hz, %g s (%d jobs)", len(present), base, sr, duration_s, n_jobs)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=out_dir, prefix=f".clips-{key}.", suffix=".scratch.npy")
    os.close(fd)
    scratch = Path(scratch)
    try:
        accepted = _decode_into(scratch, present, hashes, rejected, sr=sr, duration_s=duration_s, n_jobs=n_jobs)
        _write_table(rejected_csv, rejected, REJECTED_COLUMNS)
        empty = [c for c in classes if not any(a["class_name"] == c for a in accepted)]
        if empty:
            reasons = "; ".join(f"{Path(r['path']).name}: {r['reason']}" for r in rejected[:5])
            raise DatasetError(f"{base}: no usable clips for classes {empty} (rejected: {reasons}; "
                               f"full list in {rejected_csv})")
        with atomic_path(clips_npy) as tmp:
            if len(accepted) == len(present):
                os.replace(scratch, tmp)
            else:
                _copy_rows(scratch, tmp, n_rows=len(accepted))
    finally:
        scratch.unlink(missing_ok=True)
    _write_table(manifest_csv, accepted, MANIFEST_COLUMNS)  # last: its presence marks a complete build
    log.info("ingest: %d clips, %d rejected -> %s", len(accepted), len(rejected), manifest_csv)
    return key, outputs


def _decode_into(scratch: Path, rows: list[dict], hashes: dict, rejected: list[dict], *, sr: int,
                 duration_s: float, n_jobs: int) -> list[dict]:
    """Decode rows, packing good clips at the front of a (len(rows), n) memmap; return manifest records."""
    log = run_logger(__name__)
    grid = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32, shape=(len(rows), round(sr * duration_s)))
    accepted = []
    results = _decode_all([r["path"] for r in rows], sr=sr, duration_s=duration_s, n_jobs=n_jobs)
    for i, (row, (clip, info, reason)) in enumerate(zip(rows, results)):
        if reason is not None:
            rejected.append({**_pick(row, REJECTED_COLUMNS), "reason": reason})
        else:
            grid[len(accepted)] = clip
            accepted.append({**row, **info, "sha256": hashes[row["path"]]})
        if (i + 1) % max(1, len(rows) // 10) == 0:
            log.info("ingest: decoded %d/%d", i + 1, len(rows))
    grid.flush()
    return accepted


def _copy_rows(source: Path, dest: Path, *, n_rows: int, block: int = 64) -> None:
    """Write the first n_rows of a .npy into a new .npy, a block at a time (no full copy in memory)."""
    src = np.load(source, mmap_mode="r")
    out = np.lib.format.open_memmap(dest, mode="w+", dtype=src.dtype, shape=(n_rows, *src.shape[1:]))
    for start in range(0, n_rows, block):
        out[start:start + block] = src[start:min(start + block, n_rows)]
    out.flush()


def _decode_all(paths: list[str], *, sr: int, duration_s: float, n_jobs: int) -> Iterator[tuple]:
    """load_checked over paths, in order, in n_jobs worker processes."""
    job = partial(load_checked, sr=sr, duration_s=duration_s)
    if n_jobs <= 1 or len(paths) < 2:
        return map(job, paths)
    # loky workers neither fork Prefect's/TF's threads nor re-run the caller's __main__
    # (multiprocessing's spawn/forkserver do), and they are reused between calls.
    return Parallel(n_jobs=n_jobs, backend="loky", return_as="generator", batch_size=8)(
        delayed(job)(p) for p in paths)


def _refresh_paths(manifest_csv: Path, rejected_csv: Path, rows: list[dict]) -> None:
    """Same content found at another place: point the cached tables at the current files."""
    where = {(r["class_name"], r["filename"]): r["path"] for r in rows}
    for table in (manifest_csv, rejected_csv):
        frame = read_manifest(table)
        if frame.empty:
            continue
        paths = [where.get(k, p) for k, p in zip(zip(frame["class_name"], frame["filename"]), frame["path"])]
        if paths != list(frame["path"]):
            frame["path"] = paths
            with atomic_path(table) as tmp:
                frame.to_csv(tmp, index=False)


def _write_table(path: Path, records: list[dict], columns: list[str]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(records, columns=columns).to_csv(tmp, index=False)


def _pick(row: dict, columns: list[str]) -> dict:
    return {c: row[c] for c in columns if c in row}


# ---------------------------------------------------------------- sources: folder, zip, URL

def resolve_source(source: str | None, *, raw_dir: Path) -> Path:
    """Folder -> itself; .zip -> extracted under raw_dir; URL -> downloaded and extracted; None -> ESC-50."""
    raw_dir = Path(raw_dir)
    source = ESC50_URL if source is None else str(source)
    if urllib.parse.urlparse(source).scheme in ("http", "https"):
        name = _archive_name(source)
        target = raw_dir / name.removesuffix(".zip")
        if _marker(target) == {"source": source}:
            return target
        archive = download(source, raw_dir / "downloads" / name)
        if not zipfile.is_zipfile(archive):  # e.g. cut short by a server that sent no length
            archive.unlink()
            raise DownloadError(f"{source}: the download is not a complete zip archive (deleted; a retry fetches it again)")
        return _extract(archive, target, identity={"source": source})
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_file() and path.suffix.lower() == ".zip":
        st = path.stat()
        identity = {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        target = raw_dir / path.stem
        if _marker(target) == identity:
            return target
        return _extract(path, target, identity=identity)
    raise DatasetError(f"{source}: not a folder, a .zip file or an http(s) URL")


def _archive_name(url: str) -> str:
    """File name for a download; GitHub '<repo>/archive/<ref>.zip' becomes '<repo>-<ref>.zip'."""
    parts = [p for p in urllib.parse.urlparse(url).path.split("/") if p]
    if "archive" in parts and 0 < parts.index("archive") < len(parts) - 1:
        return f"{parts[parts.index('archive') - 1]}-{parts[-1]}"
    return parts[-1] if parts else "download.zip"


def _marker(target: Path) -> dict | None:
    """Identity recorded by a finished extraction, None if there is none."""
    try:
        return json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        if target.exists():
            raise DatasetError(f"{target}: exists but was not extracted by soundflow; remove it or pass it as the source")
        return None


def _extract(archive: Path, target: Path, *, identity: dict) -> Path:
    """Check every member, extract to a temp folder, write the marker last, then swap it into place."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_member(archive, info)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
            try:
                zf.extractall(tmp)
                (tmp / MARKER).write_text(json.dumps(identity))
                if target.exists():
                    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
                    os.replace(target, old / "x")
                    shutil.rmtree(old)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{archive}: not a valid zip archive ({exc})") from exc
    run_logger(__name__).info("extracted %s -> %s", archive, target)
    return target


def _check_member(archive: Path, info: zipfile.ZipInfo) -> None:
    """Refuse absolute paths, '..' components and symlinks (zip-slip)."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        why = "absolute path"
    elif ".." in parts:
        why = "'..' path component"
    elif stat.S_ISLNK(info.external_attr >> 16):
        why = "symbolic link"
    else:
        return
    raise DatasetError(f"{archive}: unsafe member {name!r} ({why}); refusing to extract")


def download(url: str, dest: str | os.PathLike, *, expected_size: int | None = None,
             expected_sha256: str | None = None, progress: bool = True, timeout_s: float = 60.0) -> Path:
    """Stream url to dest via dest.part (resuming with Range), verify size and sha256, rename at the end."""
    dest = Path(dest)
    if (dest.exists() and (expected_size is None or dest.stat().st_size == expected_size)
            and (expected_sha256 is None or file_sha256(dest) == expected_sha256.lower())):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):
        try:
            total = _fetch(url, part, progress=progress, timeout_s=timeout_s, allow_resume=attempt == 0)
            break
        except _Restart:
            part.unlink(missing_ok=True)
    else:
        raise DownloadError(f"{url}: the server's range responses do not match the request")
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: truncated, received {size} of {total} bytes (partial kept at {part} to resume)")
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: size mismatch, got {size} bytes, expected {expected_size}")
    if expected_sha256 is not None and (got := file_sha256(part)) != expected_sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: sha256 mismatch, got {got}, expected {expected_sha256.lower()}")
    os.replace(part, dest)
    return dest


class _Restart(Exception):
    """The partial file cannot be resumed; start over."""


def _fetch(url: str, part: Path, *, progress: bool, timeout_s: float, allow_resume: bool) -> int | None:
    """Append the rest of url to part; return the full size if the server told it."""
    offset = part.stat().st_size if allow_resume and part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "soundflow"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: complete if the total matches
            match = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return offset
            raise _Restart from exc
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise _Restart
            total = int(match.group(2)) if match.group(2) != "*" else None
            mode = "ab"
        else:  # 200: the server ignored Range, so start from zero
            offset, mode = 0, "wb"
            total = int(length) if length else None
        log, step, next_report = run_logger(__name__), (total or 0) // 10 or 50 * _CHUNK, 0
        done = offset
        try:
            with open(part, mode) as fh:
                while block := response.read(_CHUNK):
                    fh.write(block)
                    done += len(block)
                    if progress and done >= next_report:
                        pct = f"{100 * done / total:.0f}%" if total else "?%"
                        log.info("download %s: %s (%.1f MB)", url, pct, done / 1e6)
                        next_report = (done // step + 1) * step
        except (OSError, http.client.HTTPException) as exc:  # connection reset, timeout, IncompleteRead
            raise DownloadError(f"{url}: interrupted after {done} bytes ({exc}); retry resumes") from exc
    return total


# ---------------------------------------------------------------- Prefect tasks


def _retry_on_io(task, task_run, state) -> bool:
    """Retry network and disk failures; a bad dataset fails the same way every time."""
    exc = state.data if isinstance(state.data, BaseException) else None
    return exc is None or isinstance(exc, (DownloadError, OSError))


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_on_io, cache_policy=NO_CACHE)
def fetch_dataset(source: str | None, data_dir: str) -> str:
    """Resolve a folder, zip or URL (None: ESC-50) to a local dataset folder under data_dir/raw."""
    return str(resolve_source(source, raw_dir=Path(data_dir) / "raw"))


@task(cache_policy=NO_CACHE)
def ingest(dataset_root: str, dataset: str, sr: int, duration_s: float, data_dir: str, n_jobs: int) -> dict:
    """Build (or reuse) the manifest and clip array under data_dir/interim; return their paths and counts."""
    key, (manifest, clips, rejected) = _build(Path(dataset_root), dataset=dataset, sr=sr, duration_s=duration_s,
                                              out_dir=Path(data_dir) / "interim", n_jobs=n_jobs)
    return {"manifest": str(manifest), "clips": str(clips), "rejected": str(rejected), "digest": key,
            "n_clips": len(read_manifest(manifest)), "n_rejected": len(read_manifest(rejected))}
