"""Layouts, manifest, cache, zip safety and downloads, on real files and a local HTTP server."""
from __future__ import annotations

import hashlib
import http.server
import io
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from prefect.states import Failed

from tasks.config import BOOK_CLASSES
from tasks.data.audio import load_audio
from tasks.data.ingest import (
    MANIFEST_COLUMNS,
    _retry_on_io,
    build_manifest,
    detect_layout,
    download,
    fetch_dataset,
    ingest,
    read_manifest,
    resolve_source,
    scan,
)
from tasks.errors import DatasetError, DownloadError

SR = 8000
# A few ESC-50 categories outside ESC-10, with their ESC-50 targets.
OTHER = {"pig": 2, "cow": 3, "frog": 4}
ESC50_TARGET = {"dog": 0, "rooster": 1, "rain": 10, "sea_waves": 11, "crying_baby": 20, "clock_tick": 38,
                "sneezing": 21, "helicopter": 40, "chainsaw": 41, "crackling_fire": 12, **OTHER}


def _clip(path: Path, seed: int, *, sr: int = SR, duration_s: float = 0.5, **kw) -> Path:
    """A short noise burst whose content depends on seed, written as a real audio file."""
    y = np.random.default_rng(seed).uniform(-0.5, 0.5, round(sr * duration_s)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr, **kw)
    return path


def _make_esc50(root: Path, *, clips_per_class: int = 2) -> Path:
    """A tiny ESC-50 tree: audio/*.wav and meta/esc50.csv with esc10 True/False rows."""
    rows, seed = [], 0
    for category, target in ESC50_TARGET.items():
        for k in range(clips_per_class):
            fold, src = k % 5 + 1, 1000 + seed
            name = f"{fold}-{src}-A-{target}.wav"
            _clip(root / "audio" / name, seed)
            rows.append({"filename": name, "fold": fold, "target": target, "category": category,
                         "esc10": category in BOOK_CLASSES, "src_file": src, "take": "A"})
            seed += 1
    (root / "meta").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "meta" / "esc50.csv", index=False)
    return root


def _zip_tree(folder: Path, zip_path: Path, *, top: str = "ESC-50-master") -> bytes:
    """Zip folder's contents under one top folder, as GitHub archives do."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    zip_path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in [folder, *folder.rglob("*")]}


# ---------------------------------------------------------------- real ESC-10

def test_real_esc10_scan(esc10_dir):
    rows, classes, base = scan(esc10_dir, dataset="esc10")
    frame = pd.DataFrame(rows)
    assert len(frame) == 400 and classes == list(BOOK_CLASSES) and base == esc10_dir
    assert frame.groupby("class_name").size().to_dict() == {c: 40 for c in BOOK_CLASSES}
    assert sorted(frame["fold"].unique()) == [1, 2, 3, 4, 5]
    ids = dict(zip(frame["class_name"], frame["class_id"]))
    assert ids["rain"] == 0 and ids["dog"] == 6 and ids["chainsaw"] == 9
    assert list(frame.sort_values(["class_id", "filename"]).index) == list(range(400))
    first = frame.iloc[0]
    assert first["filename"].split("-")[1] == first["source_id"] and first["take"] in "ABCDEFGH"
    # sources never straddle folds (ESC-10's own guarantee, which the split relies on)
    assert frame.groupby("source_id")["fold"].nunique().max() == 1


def test_real_esc10_small_decode(esc10_dir, tmp_path):
    """One real clip per class through the ESC-10 layout (symlinks to the read-only originals)."""
    root = tmp_path / "esc10"
    for folder in sorted(p for p in esc10_dir.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        first = sorted(folder.glob("*.ogg"))[0]
        (root / folder.name / first.name).symlink_to(first)
    before = _snapshot(esc10_dir)
    manifest, clips, rejected = build_manifest(root, sr=SR, duration_s=5.0, out_dir=tmp_path / "out", n_jobs=1)
    frame = read_manifest(manifest)
    array = np.load(clips)
    assert array.shape == (10, 5 * SR) and array.dtype == np.float32
    assert list(frame["class_name"]) == list(BOOK_CLASSES) and list(frame["class_id"]) == list(range(10))
    assert (frame["sample_rate"] == 44100).all() and (frame["channels"] == 1).all()
    assert read_manifest(rejected).empty
    assert _snapshot(esc10_dir) == before


@pytest.mark.slow
def test_real_esc10_full_decode(esc10_dir, tmp_path):
    manifest, clips, rejected = build_manifest(esc10_dir, sr=44100, out_dir=tmp_path, n_jobs=2)
    assert np.load(clips, mmap_mode="r").shape == (400, 220500)
    assert len(read_manifest(manifest)) == 400 and read_manifest(rejected).empty


# ---------------------------------------------------------------- ESC-50 layout, generic layout

@pytest.mark.parametrize("dataset, n_classes", [("esc10", 10), ("esc50", 13)])
def test_esc50_layout_subsets(tmp_path, dataset, n_classes):
    root = _make_esc50(tmp_path / "ESC-50")
    manifest, clips, _ = build_manifest(root, dataset=dataset, sr=SR, duration_s=0.5, out_dir=tmp_path / "out",
                                        n_jobs=1)
    frame = read_manifest(manifest)
    assert list(frame.columns) == MANIFEST_COLUMNS
    assert frame["class_name"].nunique() == n_classes and len(frame) == 2 * n_classes
    assert np.load(clips).shape == (len(frame), SR // 2)
    ids = dict(zip(frame["class_name"], frame["class_id"]))
    if dataset == "esc10":
        assert set(ids) == set(BOOK_CLASSES) and ids == {c: BOOK_CLASSES.index(c) for c in BOOK_CLASSES}
    else:
        assert ids == ESC50_TARGET
    assert list(frame.index) == list(frame.sort_values(["class_id", "filename"]).index)
    assert set(frame["fold"]) == {1, 2} and frame["source_id"].str.fullmatch(r"\d+").all()


def test_generic_layout_sorted_ids_fold0_and_clip_order(tmp_path):
    root = tmp_path / "mine"
    _clip(root / "zebra" / "b.wav", 1)
    _clip(root / "zebra" / "a.flac", 2, sr=16000)
    _clip(root / "cat" / "3-777-B.ogg", 3, duration_s=0.3)
    (root / "cat" / "notes.txt").write_text("not audio")
    assert detect_layout(root) == ("folders", root)
    manifest, clips, _ = build_manifest(root, dataset="folders", sr=SR, duration_s=0.5, out_dir=tmp_path / "o",
                                        n_jobs=1)
    frame = read_manifest(manifest)
    assert list(frame["filename"]) == ["3-777-B.ogg", "a.flac", "b.wav"]
    assert list(frame["class_id"]) == [0, 1, 1] and (frame["fold"] == 0).all()
    assert list(frame["source_id"]) == ["777", "a", "b"] and list(frame["take"]) == ["B", "", ""]
    array = np.load(clips)
    for i, path in enumerate(frame["path"]):  # clip rows follow manifest rows
        np.testing.assert_array_equal(array[i], load_audio(path, sr=SR, duration_s=0.5))


def test_dataset_name_must_fit_layout(tmp_path):
    root = tmp_path / "mine"
    _clip(root / "cat" / "a.wav", 1)
    with pytest.raises(DatasetError, match="folders"):
        scan(root, dataset="esc10")
    with pytest.raises(DatasetError, match="unknown dataset"):
        scan(root, dataset="urbansound")


def test_empty_folder_names_folder_and_layout(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError) as info:
        build_manifest(tmp_path / "empty", dataset="folders", sr=SR, out_dir=tmp_path / "o")
    assert str(tmp_path / "empty") in str(info.value) and "expected" in str(info.value)


# ---------------------------------------------------------------- bad files, cache, parallel, read-only source

def _mixed_folder(root: Path) -> Path:
    for k in range(3):
        _clip(root / "cat" / f"good{k}.wav", k)
    _clip(root / "dog" / "good.wav", 10)
    (root / "dog" / "empty.wav").write_bytes(b"")
    _clip(root / "dog" / "silent.wav", 0, duration_s=0.0)  # zero frames
    sf.write(root / "cat" / "zeros.wav", np.zeros(SR // 2, np.float32), SR)
    return root


def test_bad_files_go_to_rejected_table(tmp_path):
    root = _mixed_folder(tmp_path / "data")
    manifest, clips, rejected = build_manifest(root, dataset="folders", sr=SR, duration_s=0.5,
                                               out_dir=tmp_path / "o", n_jobs=1)
    frame, bad = read_manifest(manifest), read_manifest(rejected)
    assert sorted(frame["filename"]) == ["good.wav", "good0.wav", "good1.wav", "good2.wav"]
    assert np.load(clips).shape == (4, SR // 2)
    reasons = dict(zip(bad["filename"], bad["reason"]))
    assert set(reasons) == {"empty.wav", "silent.wav", "zeros.wav"}
    assert "empty file" in reasons["empty.wav"] and "all-silent" in reasons["zeros.wav"]


def test_class_with_only_bad_files_raises(tmp_path):
    root = tmp_path / "data"
    _clip(root / "cat" / "ok.wav", 1)
    (root / "dog").mkdir(parents=True)
    (root / "dog" / "broken.wav").write_bytes(b"RIFF....WAVEgarbage")
    sf.write(root / "dog" / "zeros.wav", np.zeros(SR, np.float32), SR)
    with pytest.raises(DatasetError, match=r"no usable clips for classes \['dog'\]") as info:
        build_manifest(root, dataset="folders", sr=SR, out_dir=tmp_path / "o", n_jobs=1)
    assert "broken.wav" in str(info.value)
    assert not list((tmp_path / "o").glob("manifest-*"))


def test_cache_reused_and_invalidated(tmp_path):
    root = _mixed_folder(tmp_path / "data")
    out = tmp_path / "o"
    first = build_manifest(root, dataset="folders", sr=SR, duration_s=0.5, out_dir=out, n_jobs=1)
    stamps = [p.stat().st_mtime_ns for p in first]
    assert build_manifest(root, dataset="folders", sr=SR, duration_s=0.5, out_dir=out, n_jobs=1) == first
    assert [p.stat().st_mtime_ns for p in first] == stamps
    assert not list(out.glob(".*"))  # no temp or scratch files left behind
    other_rate = build_manifest(root, dataset="folders", sr=4000, duration_s=0.5, out_dir=out, n_jobs=1)
    _clip(root / "cat" / "good0.wav", 99)  # same name, new content
    changed = build_manifest(root, dataset="folders", sr=SR, duration_s=0.5, out_dir=out, n_jobs=1)
    assert len({first[0], other_rate[0], changed[0]}) == 3


def test_moved_dataset_reuses_cache_with_new_paths(tmp_path):
    root = _mixed_folder(tmp_path / "data")
    out = tmp_path / "o"
    manifest, clips, _ = build_manifest(root, dataset="folders", sr=SR, duration_s=0.5, out_dir=out, n_jobs=1)
    stamp = clips.stat().st_mtime_ns
    moved = root.rename(tmp_path / "moved")
    again, clips_again, _ = build_manifest(moved, dataset="folders", sr=SR, duration_s=0.5, out_dir=out, n_jobs=1)
    assert again == manifest and clips_again.stat().st_mtime_ns == stamp
    assert all(p.startswith(str(moved)) for p in read_manifest(again)["path"])


def test_parallel_matches_serial_and_source_untouched(tmp_path):
    root = _make_esc50(tmp_path / "ESC-50", clips_per_class=2)
    before = _snapshot(root)
    serial = build_manifest(root, sr=SR, duration_s=0.5, out_dir=tmp_path / "a", n_jobs=1)
    parallel = build_manifest(root, sr=SR, duration_s=0.5, out_dir=tmp_path / "b", n_jobs=2)
    np.testing.assert_array_equal(np.load(serial[1]), np.load(parallel[1]))
    pd.testing.assert_frame_equal(read_manifest(serial[0]), read_manifest(parallel[0]))
    assert _snapshot(root) == before


# ---------------------------------------------------------------- zip sources

def test_zip_source_extracted_once(tmp_path):
    tree = _make_esc50(tmp_path / "tree")
    archive = tmp_path / "ESC-50-master.zip"
    _zip_tree(tree, archive)
    raw = tmp_path / "raw"
    root = resolve_source(str(archive), raw_dir=raw)
    assert root == raw / "ESC-50-master"
    assert detect_layout(root) == ("esc50", root / "ESC-50-master")
    marker_stamp = (root / ".soundflow-extracted.json").stat().st_mtime_ns
    assert resolve_source(str(archive), raw_dir=raw) == root
    assert (root / ".soundflow-extracted.json").stat().st_mtime_ns == marker_stamp
    manifest, _, _ = build_manifest(root, sr=SR, duration_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    assert len(read_manifest(manifest)) == 20
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
    manifest, _, _ = build_manifest(root, sr=SR, duration_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    assert read_manifest(manifest)["class_name"].nunique() == 10
    n_requests = len(server.requests)
    assert resolve_source(url, raw_dir=raw) == root and len(server.requests) == n_requests


def test_fetch_and_ingest_tasks(tmp_path, server):
    blob = _zip_tree(_make_esc50(tmp_path / "tree"), tmp_path / "a.zip")
    server.files["/data.zip"] = blob
    data_dir = tmp_path / "data"
    root = fetch_dataset.fn(server.url + "/data.zip", str(data_dir))
    assert root == str(data_dir / "raw" / "data")
    result = ingest.fn(root, "esc50", SR, 0.5, str(data_dir), 1)
    assert result["n_clips"] == 26 and result["n_rejected"] == 0
    assert result["digest"] in Path(result["manifest"]).name and Path(result["clips"]).exists()
    assert Path(result["manifest"]).parent == data_dir / "interim"


def test_download_resumes_partial_file(tmp_path, server):
    blob = np.random.default_rng(3).bytes(300_000)
    server.files["/big.bin"] = blob
    dest = tmp_path / "big.bin"
    Path(str(dest) + ".part").write_bytes(blob[:123_456])
    out = download(server.url + "/big.bin", dest, expected_size=len(blob),
                   expected_sha256=hashlib.sha256(blob).hexdigest())
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
    with caplog.at_level("INFO", logger="tasks.data.ingest"):
        download(server.url + "/big.bin", tmp_path / "big.bin")
    lines = [r.getMessage() for r in caplog.records if "download" in r.getMessage()]
    assert 3 <= len(lines) <= 11 and "100%" in lines[-1]
    caplog.clear()
    with caplog.at_level("INFO", logger="tasks.data.ingest"):
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
