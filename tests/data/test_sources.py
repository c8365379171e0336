"""Sources: zip archives (extracted once, zip-slip refused) and downloads (resumed, verified), on real files
and a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from prefect.states import Failed

from tasks.data.ingest import build, ingest
from tasks.data.layouts import detect
from tasks.data.manifest import read_manifest
from tasks.data.sources import _retry_on_io, download, fetch_dataset, resolve_source
from tasks.errors import DatasetError, DownloadError
from tests.data.test_ingest import SR, _make_esc50, _zip_tree

# ---------------------------------------------------------------- zip sources


def test_zip_source_extracted_once(tmp_path):
    tree = _make_esc50(tmp_path / "tree")
    archive = tmp_path / "ESC-50-master.zip"
    _zip_tree(tree, archive)
    raw = tmp_path / "raw"
    root = resolve_source(str(archive), raw_dir=raw)
    assert root == raw / "ESC-50-master"
    assert detect(root) == ("esc50", root / "ESC-50-master")
    marker_stamp = (root / ".soundflow-extracted.json").stat().st_mtime_ns
    assert resolve_source(str(archive), raw_dir=raw) == root
    assert (root / ".soundflow-extracted.json").stat().st_mtime_ns == marker_stamp
    data = build(root, sr=SR, window_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    assert len(read_manifest(data.manifest)) == 26 and data.layout == "esc50"
    assert resolve_source(str(tree), raw_dir=raw) == tree  # a folder is used in place


def _evil_zip(path: Path, kind: str) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data/cat/ok.txt", "fine")
        if kind == "dotdot":
            member = "data/../../evil.wav"
            zf.writestr(member, "x")
        elif kind == "absolute":
            member = "/tmp/evil.wav"
            info = zipfile.ZipInfo("x")
            info.filename = member  # ZipInfo() would strip the leading slash
            zf.writestr(info, "x")
        else:
            member = "data/link"
            info = zipfile.ZipInfo(member)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return member


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_zip_member_rejected(tmp_path, kind):
    archive = tmp_path / "evil.zip"
    member = _evil_zip(archive, kind)
    raw = tmp_path / "raw"
    with pytest.raises(DatasetError) as info:
        resolve_source(str(archive), raw_dir=raw)
    assert repr(member) in str(info.value) and "evil.zip" in str(info.value)
    assert not (raw / "evil").exists() and not (tmp_path / "evil.wav").exists()


def test_not_a_source(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not a folder"):
        resolve_source(str(tmp_path / "notes.txt"), raw_dir=tmp_path / "raw")


# ---------------------------------------------------------------- downloads from a local server


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.files; honours 'Range: bytes=N-' unless server.ignore_range; can cut bodies short."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        payload = body[start:]
        if srv.cut_at is not None:
            payload = payload[: srv.cut_at]
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.ignore_range, httpd.cut_at = {}, [], False, None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_url_source_downloads_extracts_and_is_idempotent(tmp_path, server):
    blob = _zip_tree(_make_esc50(tmp_path / "tree"), tmp_path / "a.zip")
    server.files["/karoldvl/ESC-50/archive/master.zip"] = blob
    url = server.url + "/karoldvl/ESC-50/archive/master.zip"
    raw = tmp_path / "raw"
    root = resolve_source(url, raw_dir=raw)
    assert root == raw / "ESC-50-master"
    assert (raw / "downloads" / "ESC-50-master.zip").read_bytes() == blob
    data = build(root, dataset="esc10", sr=SR, window_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    assert read_manifest(data.manifest)["label"].nunique() == 10
    n_requests = len(server.requests)
    assert resolve_source(url, raw_dir=raw) == root and len(server.requests) == n_requests


def test_fetch_and_ingest_tasks(tmp_path, server):
    blob = _zip_tree(_make_esc50(tmp_path / "tree"), tmp_path / "a.zip")
    server.files["/data.zip"] = blob
    data_dir = tmp_path / "data"
    root = fetch_dataset.fn(server.url + "/data.zip", str(data_dir))
    assert root == str(data_dir / "raw" / "data")
    result = ingest.fn(
        root,
        dataset="esc50",
        sr=SR,
        window_s=0.5,
        hop_s=None,
        min_duration_s=0.0,
        group_pattern=None,
        data_dir=str(data_dir),
        n_jobs=1,
    )
    assert result.n_clips == 26 and result.n_rejected == 0
    assert result.digest in Path(result.manifest).name and Path(result.clips).exists()
    assert Path(result.manifest).parent == data_dir / "interim"


def test_download_resumes_partial_file(tmp_path, server):
    blob = np.random.default_rng(3).bytes(300_000)
    server.files["/big.bin"] = blob
    dest = tmp_path / "big.bin"
    Path(str(dest) + ".part").write_bytes(blob[:123_456])
    out = download(
        server.url + "/big.bin", dest, expected_size=len(blob), expected_sha256=hashlib.sha256(blob).hexdigest()
    )
    assert out == dest and dest.read_bytes() == blob and not Path(str(dest) + ".part").exists()
    assert server.requests == [("/big.bin", "bytes=123456-")]


def test_download_restarts_when_range_ignored(tmp_path, server):
    blob = np.random.default_rng(4).bytes(50_000)
    server.files["/f.bin"] = blob
    server.ignore_range = True
    dest = tmp_path / "f.bin"
    Path(str(dest) + ".part").write_bytes(b"stale bytes that are not a prefix")
    download(server.url + "/f.bin", dest, expected_sha256=hashlib.sha256(blob).hexdigest())
    assert dest.read_bytes() == blob


def test_download_complete_part_gets_416(tmp_path, server):
    blob = b"x" * 1000
    server.files["/f.bin"] = blob
    dest = tmp_path / "f.bin"
    Path(str(dest) + ".part").write_bytes(blob)
    download(server.url + "/f.bin", dest, expected_size=1000)
    assert dest.read_bytes() == blob


@pytest.mark.parametrize("check", ["sha256", "size"])
def test_download_mismatch_raises(tmp_path, server, check):
    server.files["/f.bin"] = b"payload" * 100
    dest = tmp_path / "f.bin"
    kwargs = {"expected_sha256": "0" * 64} if check == "sha256" else {"expected_size": 5}
    with pytest.raises(DownloadError, match=check) as info:
        download(server.url + "/f.bin", dest, progress=False, **kwargs)
    assert server.url + "/f.bin" in str(info.value)
    assert not dest.exists() and not Path(str(dest) + ".part").exists()


def test_download_truncated_keeps_part_for_resume(tmp_path, server):
    blob = np.random.default_rng(5).bytes(40_000)
    server.files["/f.bin"] = blob
    server.cut_at = 10_000
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="truncated|interrupted"):
        download(server.url + "/f.bin", dest)
    assert Path(str(dest) + ".part").stat().st_size == 10_000
    server.cut_at = None
    download(server.url + "/f.bin", dest)  # the retry resumes
    assert dest.read_bytes() == blob and server.requests[-1][1] == "bytes=10000-"


def test_download_logs_progress(tmp_path, server, caplog):
    blob = np.random.default_rng(6).bytes(4 << 20)
    server.files["/big.bin"] = blob
    with caplog.at_level("INFO", logger="tasks.data.sources"):
        download(server.url + "/big.bin", tmp_path / "big.bin")
    lines = [r.getMessage() for r in caplog.records if "download" in r.getMessage()]
    assert 3 <= len(lines) <= 11 and "100%" in lines[-1]
    caplog.clear()
    with caplog.at_level("INFO", logger="tasks.data.sources"):
        download(server.url + "/big.bin", tmp_path / "again.bin", progress=False)
    assert not [r for r in caplog.records if "download" in r.getMessage()]


def test_url_that_is_not_a_zip(tmp_path, server):
    server.files["/x.zip"] = b"<html>not a zip</html>"
    with pytest.raises(DownloadError, match="not a complete zip"):
        resolve_source(server.url + "/x.zip", raw_dir=tmp_path / "raw")
    assert not (tmp_path / "raw" / "downloads" / "x.zip").exists()


def test_download_http_error(tmp_path, server):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url + "/missing.zip", tmp_path / "m.zip")


def test_retries_only_on_io_errors():
    assert _retry_on_io(None, None, Failed(data=DownloadError("x: timeout")))
    assert _retry_on_io(None, None, Failed(data=OSError("disk")))
    assert not _retry_on_io(None, None, Failed(data=DatasetError("bad zip member")))
