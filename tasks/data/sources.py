"""Where a dataset comes from: a folder, a CSV manifest, a .zip, or a URL (downloaded, resumable, verified)."""

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
from pathlib import Path, PurePosixPath

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import file_sha256
from tasks.data.layouts.esc50 import URL as ESC50_URL
from tasks.errors import DatasetError, DownloadError
from tasks.logs import run_logger

MARKER = ".soundflow-extracted.json"
_CHUNK = 1 << 20


def resolve_source(source: str | None, *, raw_dir: Path) -> Path:
    """Folder or .csv -> itself; .zip -> extracted under raw_dir; URL -> downloaded and extracted; None -> ESC-50."""
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
            raise DownloadError(
                f"{source}: the download is not a complete zip archive (deleted; a retry fetches it again)"
            )
        return _extract(archive, target, identity={"source": source})
    path = Path(source).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv"):
        return path.resolve()
    if path.is_file() and path.suffix.lower() == ".zip":
        st = path.stat()
        identity = {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        target = raw_dir / path.stem
        if _marker(target) == identity:
            return target
        return _extract(path, target, identity=identity)
    raise DatasetError(f"{source}: not a folder, a .csv manifest, a .zip file or an http(s) URL")


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
            raise DatasetError(
                f"{target}: exists but was not extracted by soundflow; remove it or pass it as the source"
            ) from None
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


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout_s: float = 60.0,
) -> Path:
    """Stream url to dest via dest.part (resuming with Range), verify size and sha256, rename at the end."""
    dest = Path(dest)
    if (
        dest.exists()
        and (expected_size is None or dest.stat().st_size == expected_size)
        and (expected_sha256 is None or file_sha256(dest) == expected_sha256.lower())
    ):
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


def _retry_on_io(task, task_run, state) -> bool:
    """Retry network and disk failures; a bad dataset fails the same way every time."""
    exc = state.data if isinstance(state.data, BaseException) else None
    return exc is None or isinstance(exc, (DownloadError, OSError))


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_on_io, cache_policy=NO_CACHE)
def fetch_dataset(source: str | None, data_dir: str) -> str:
    """Resolve a folder, zip or URL (None: ESC-50) to a local dataset folder under data_dir/raw."""
    return str(resolve_source(source, raw_dir=Path(data_dir) / "raw"))
