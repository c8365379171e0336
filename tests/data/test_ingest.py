"""Ingestion on real files: layouts into one manifest, decoding, windows, rejected files, caching."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.data.audio import load_audio
from tasks.data.ingest import build
from tasks.data.layouts import detect, scan
from tasks.data.layouts.esc10 import BOOK_CLASSES
from tasks.data.manifest import COLUMNS, read_manifest, read_rejected
from tasks.errors import DatasetError

SR = 8000
# A few ESC-50 categories outside ESC-10, with their ESC-50 targets.
OTHER = {"pig": 2, "cow": 3, "frog": 4}
ESC50_TARGET = {
    "dog": 0,
    "rooster": 1,
    "rain": 10,
    "sea_waves": 11,
    "crying_baby": 20,
    "clock_tick": 38,
    "sneezing": 21,
    "helicopter": 40,
    "chainsaw": 41,
    "crackling_fire": 12,
    **OTHER,
}


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
            rows.append(
                {
                    "filename": name,
                    "fold": fold,
                    "target": target,
                    "category": category,
                    "esc10": category in BOOK_CLASSES,
                    "src_file": src,
                    "take": "A",
                }
            )
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
    listing = scan(esc10_dir)
    frame = listing.recordings
    assert listing.layout == "esc10" and listing.name == "esc10" and listing.classes == list(BOOK_CLASSES)
    assert len(frame) == 400 and listing.base == esc10_dir and not listing.notes
    assert frame.groupby("label").size().to_dict() == {c: 40 for c in BOOK_CLASSES}
    assert sorted(frame["fold"].unique()) == [1, 2, 3, 4, 5]
    first = frame.iloc[0]
    assert Path(first["path"]).name.split("-")[1] == first["group"] and first["source_class_id"] == "002"
    # sources never straddle folds (ESC-10's own guarantee, which the split relies on)
    assert frame.groupby("group")["fold"].nunique().max() == 1


def test_real_esc10_small_decode(esc10_dir, tmp_path):
    """One real clip per class through the ESC-10 layout (symlinks to the read-only originals)."""
    root = tmp_path / "esc10"
    for folder in sorted(p for p in esc10_dir.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        first = sorted(folder.glob("*.ogg"))[0]
        (root / folder.name / first.name).symlink_to(first)
    before = _snapshot(esc10_dir)
    data = build(root, sr=SR, window_s=5.0, out_dir=tmp_path / "out", n_jobs=1)
    frame = read_manifest(data.manifest)
    array = np.load(data.clips)
    assert array.shape == (10, 5 * SR) and array.dtype == np.float32
    assert list(frame["label"]) == list(BOOK_CLASSES) and list(frame["class_id"]) == list(range(10))
    assert (frame["sample_rate"] == 44100).all() and (frame["channels"] == 1).all()
    assert list(frame.columns) == list(COLUMNS) and (frame["start_s"] == 0).all()
    assert read_rejected(data.rejected).empty
    for i, path in enumerate(frame["path"]):  # one 5-s window per clip: exactly the clip, as before windows
        np.testing.assert_array_equal(array[i], load_audio(path, sr=SR, duration_s=5.0))
    assert _snapshot(esc10_dir) == before


@pytest.mark.slow
def test_real_esc10_full_decode(esc10_dir, tmp_path):
    data = build(esc10_dir, sr=44100, out_dir=tmp_path, n_jobs=2)
    assert np.load(data.clips, mmap_mode="r").shape == (400, 220500)
    assert data.n_clips == 400 and data.n_recordings == 400 and data.n_rejected == 0


# ---------------------------------------------------------------- ESC-50 layout, generic layout


@pytest.mark.parametrize("dataset, n_classes", [("esc10", 10), ("esc50", 13), ("auto", 13)])
def test_esc50_layout_subsets(tmp_path, dataset, n_classes):
    root = _make_esc50(tmp_path / "ESC-50")
    data = build(root, dataset=dataset, sr=SR, window_s=0.5, out_dir=tmp_path / "out", n_jobs=1)
    frame = read_manifest(data.manifest)
    assert frame["label"].nunique() == n_classes and len(frame) == 2 * n_classes
    assert np.load(data.clips).shape == (len(frame), SR // 2)
    ids = dict(zip(frame["label"], frame["class_id"]))
    if dataset == "esc10":
        assert ids == {c: BOOK_CLASSES.index(c) for c in BOOK_CLASSES}
    else:  # contiguous ids in the dataset's own target order; its ids kept beside them
        order = sorted(ESC50_TARGET, key=ESC50_TARGET.get)
        assert ids == {c: order.index(c) for c in order}
        assert dict(zip(frame["label"], frame["source_class_id"])) == {c: str(t) for c, t in ESC50_TARGET.items()}
    assert set(frame["fold"]) == {1, 2} and frame["group"].str.fullmatch(r"\d+").all()


def test_esc50_csv_with_some_categories_gets_contiguous_ids(tmp_path):
    """A CSV listing only some of the 50 categories (targets 0, 10, 41) still gives ids 0..n-1."""
    root = _make_esc50(tmp_path / "ESC-50")
    meta = pd.read_csv(root / "meta" / "esc50.csv")
    meta[meta["category"].isin(["dog", "rain", "chainsaw"])].to_csv(root / "meta" / "esc50.csv", index=False)
    frame = read_manifest(build(root, sr=SR, window_s=0.5, out_dir=tmp_path / "o", n_jobs=1).manifest)
    assert dict(zip(frame["label"], frame["class_id"])) == {"dog": 0, "rain": 1, "chainsaw": 2}


def test_generic_layout_sorted_ids_no_folds_and_clip_order(tmp_path):
    root = tmp_path / "mine"
    _clip(root / "zebra" / "b.wav", 1)
    _clip(root / "zebra" / "a.flac", 2, sr=16000)
    _clip(root / "cat" / "3-777-B.ogg", 3, duration_s=0.3)
    (root / "cat" / "notes.txt").write_text("not audio")
    assert detect(root) == ("folders", root)
    data = build(root, sr=SR, window_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    frame = read_manifest(data.manifest)
    assert data.layout == "folders" and data.name == "mine"
    assert list(frame["filename"]) == ["3-777-B.ogg", "a.flac", "b.wav"]
    assert list(frame["class_id"]) == [0, 1, 1] and frame["fold"].isna().all()
    # no ESC file-name parse outside ESC: each file is its own group, and the run says so
    assert list(frame["group"]) == ["cat/3-777-B.ogg", "zebra/a.flac", "zebra/b.wav"]
    assert any("no group information" in n for n in data.notes)
    array = np.load(data.clips)
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
        build(tmp_path / "empty", sr=SR, out_dir=tmp_path / "o")
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
    data = build(root, sr=SR, window_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    frame, bad = read_manifest(data.manifest), read_rejected(data.rejected)
    assert sorted(frame["filename"]) == ["good.wav", "good0.wav", "good1.wav", "good2.wav"]
    assert np.load(data.clips).shape == (4, SR // 2)
    reasons = dict(zip(bad["filename"], bad["reason"]))
    assert set(reasons) == {"empty.wav", "silent.wav", "zeros.wav"}
    assert "empty file" in reasons["empty.wav"] and "all-silent" in reasons["zeros.wav"]


def test_class_with_only_bad_files_raises(tmp_path):
    root = tmp_path / "data"
    _clip(root / "cat" / "ok.wav", 1)
    (root / "dog").mkdir(parents=True)
    (root / "dog" / "broken.wav").write_bytes(b"RIFF....WAVEgarbage")
    sf.write(root / "dog" / "zeros.wav", np.zeros(SR, np.float32), SR)
    with pytest.raises(DatasetError, match=r"no usable recordings for classes \['dog'\]") as info:
        build(root, sr=SR, out_dir=tmp_path / "o", n_jobs=1)
    assert "broken.wav" in str(info.value)
    assert not list((tmp_path / "o").glob("manifest-*"))


def test_cache_reused_and_invalidated(tmp_path):
    root = _mixed_folder(tmp_path / "data")
    out = tmp_path / "o"
    first = build(root, sr=SR, window_s=0.5, out_dir=out, n_jobs=1)
    files = [Path(first.manifest), Path(first.clips), Path(first.rejected), Path(first.info)]
    stamps = [p.stat().st_mtime_ns for p in files]
    assert build(root, sr=SR, window_s=0.5, out_dir=out, n_jobs=1) == first
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert not list(out.glob(".*"))  # no temp or scratch files left behind
    other_rate = build(root, sr=4000, window_s=0.5, out_dir=out, n_jobs=1)
    other_window = build(root, sr=SR, window_s=0.25, out_dir=out, n_jobs=1)
    _clip(root / "cat" / "good0.wav", 99)  # same name, new content
    changed = build(root, sr=SR, window_s=0.5, out_dir=out, n_jobs=1)
    assert len({first.digest, other_rate.digest, other_window.digest, changed.digest}) == 4


def test_moved_dataset_reuses_cache_with_new_paths(tmp_path):
    root = _mixed_folder(tmp_path / "a" / "data")
    out = tmp_path / "o"
    first = build(root, sr=SR, window_s=0.5, out_dir=out, n_jobs=1)
    stamp = Path(first.clips).stat().st_mtime_ns
    (tmp_path / "b").mkdir()
    moved = root.rename(tmp_path / "b" / "data")
    again = build(moved, sr=SR, window_s=0.5, out_dir=out, n_jobs=1)
    assert again.manifest == first.manifest and Path(again.clips).stat().st_mtime_ns == stamp
    assert all(p.startswith(str(moved)) for p in read_manifest(again.manifest)["path"])


def test_parallel_matches_serial_and_source_untouched(tmp_path):
    root = _make_esc50(tmp_path / "ESC-50", clips_per_class=2)
    before = _snapshot(root)
    serial = build(root, sr=SR, window_s=0.5, out_dir=tmp_path / "a", n_jobs=1)
    parallel = build(root, sr=SR, window_s=0.5, out_dir=tmp_path / "b", n_jobs=2)
    np.testing.assert_array_equal(np.load(serial.clips), np.load(parallel.clips))
    pd.testing.assert_frame_equal(read_manifest(serial.manifest), read_manifest(parallel.manifest))
    assert _snapshot(root) == before
