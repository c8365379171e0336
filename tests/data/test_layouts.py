"""Every layout on small generated datasets (odd rates, stereo, 8-bit, short and long files) into one manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.data.ingest import build
from tasks.data.layouts import detect, scan
from tasks.data.manifest import read_manifest, read_rejected
from tasks.data.split import make_splits
from tasks.errors import DatasetError

SR = 8000


def _tone(
    path: Path,
    freq_hz: float,
    *,
    duration_s: float = 0.5,
    sr: int = SR,
    channels: int = 1,
    subtype: str | None = None,
    seed: int = 0,
) -> Path:
    """A tone plus a little seeded noise, written as a real audio file."""
    t = np.arange(round(sr * duration_s)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq_hz * t) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    y = np.stack([y, 0.5 * y], axis=1) if channels == 2 else y
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), sr, subtype=subtype)
    return path


def _urbansound(root: Path) -> Path:
    """UrbanSound8K-style: slices named fsID-classID-occurrence-slice, several slices per recording (fsID)."""
    rows = []
    classes = {0: "air_conditioner", 3: "dog_bark", 7: "jackhammer"}
    for class_id, name in classes.items():
        for fs_id in (100 + class_id, 200 + class_id, 300 + class_id):
            fold = {1: 1, 2: 2, 3: 3}[fs_id // 100]
            for k in range(2):
                fname = f"{fs_id}-{class_id}-0-{k}.wav"
                _tone(
                    root / "audio" / f"fold{fold}" / fname,
                    300 + 100 * class_id,
                    seed=fs_id + k,
                    sr=22050 if k else 16000,
                )
                rows.append(
                    {
                        "slice_file_name": fname,
                        "fsID": fs_id,
                        "start": k * 4.0,
                        "end": k * 4.0 + 0.5,
                        "salience": 1,
                        "fold": fold,
                        "classID": class_id,
                        "class": name,
                    }
                )
    (root / "metadata").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    return root


def test_urbansound8k_groups_by_fsid_not_by_class(tmp_path):
    root = _urbansound(tmp_path / "UrbanSound8K")
    assert detect(root) == ("urbansound8k", root)
    data = build(root, sr=SR, window_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    m = read_manifest(data.manifest)
    assert data.name == "urbansound8k" and len(m) == 18
    assert list(dict.fromkeys(m["label"])) == ["air_conditioner", "dog_bark", "jackhammer"]
    assert list(m["class_id"].unique()) == [0, 1, 2] and set(m["source_class_id"]) == {"0", "3", "7"}
    # the group is the Freesound recording (fsID), never the class id that comes second in the name
    assert m["group"].nunique() == 9 and set(m["group"]) == {
        str(g) for c in (0, 3, 7) for g in (100 + c, 200 + c, 300 + c)
    }
    assert set(m["fold"]) == {1, 2, 3}
    splits = make_splits(m, scheme="auto")
    assert len(splits) == 3  # the dataset's own folds
    for tr, te in splits:
        assert not set(m["group"].iloc[tr]) & set(m["group"].iloc[te])


def test_csv_manifest_relative_paths_regions_and_digit_labels(tmp_path):
    root = tmp_path / "proj"
    _tone(root / "audio" / "a.wav", 440, duration_s=2.0, sr=11025, channels=2)
    _tone(root / "audio" / "b.flac", 880, duration_s=0.5)
    _tone(root / "b.wav", 660, duration_s=0.5, subtype="PCM_U8")
    csv = root / "labels.csv"
    csv.write_text(
        "path,label,group,start_s,end_s\n"
        "audio/a.wav,1,spk a,0,1.0\n"
        "audio/a.wav,0,spk a,1.0,2.0\n"
        f"{(root / 'audio' / 'b.flac').as_posix()},0,spk b,,\n"
        "b.wav,10,spk c,,\n"
    )
    data = build(csv, sr=SR, window_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    m = read_manifest(data.manifest)
    assert data.layout == "csv" and data.name == "labels"
    # labels stay strings; ids follow sorted names
    assert m["label"].map(type).eq(str).all() and dict(zip(m["label"], m["class_id"])) == {"0": 0, "1": 1, "10": 2}
    region = m[m["recording_id"] == "audio/a.wav@0-1"]
    assert len(region) == 2 and list(region["start_s"]) == [0.0, 0.5]
    assert set(m.loc[m["recording_id"].str.startswith("audio/a.wav"), "group"]) == {"spk a"}
    assert (m["fold"].isna()).all() and m["recording_id"].nunique() == 4


def test_csv_manifest_errors_name_the_row(tmp_path):
    root = tmp_path / "p"
    _tone(root / "a.wav", 440)
    bad = {
        "missing file": ("path,label\na.wav,x\nnope.wav,y\n", r"row 2: file not found: .*nope.wav"),
        "empty label": ("path,label\na.wav,\n", r"row 1 \(a.wav\): empty label"),
        "unknown column": ("path,label,speaker\na.wav,x,s1\n", r"unknown columns \['speaker'\]"),
        "no label column": ("path,class\na.wav,x\n", r"missing columns \['label'\]"),
        "bad number": ("path,label,start_s\na.wav,x,soon\n", r"row 1: start_s 'soon' is not a number"),
    }
    for name, (text, pattern) in bad.items():
        csv = root / f"{name.replace(' ', '_')}.csv"
        csv.write_text(text)
        with pytest.raises(DatasetError, match=pattern):
            scan(csv)


def test_folders_group_pattern_non_ascii_classes_and_leak_free_folds(tmp_path):
    root = tmp_path / "speech"
    labels = ["oui", "non", "peut être", "çà"]
    for c, label in enumerate(labels):
        for spk in range(6):
            _tone(root / label / f"spk{spk}_take{c}_{label}.wav", 200 + 150 * c, seed=10 * c + spk)
    listing = scan(root, group_pattern=r"^(spk\d+)_")
    assert listing.classes == sorted(labels) and not listing.notes
    data = build(root, group_pattern=r"^(spk\d+)_", sr=SR, window_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    m = read_manifest(data.manifest)
    assert m["group"].nunique() == 6
    for tr, te in make_splits(m, scheme="auto", k=3, seed=0):  # no folds: group k-fold, speakers kept apart
        assert not set(m["group"].iloc[tr]) & set(m["group"].iloc[te])
    with pytest.raises(DatasetError, match=r"does not match this file name"):
        scan(root, group_pattern=r"^(speaker\d+)_")
    with pytest.raises(DatasetError, match="needs a capture group"):
        scan(root, group_pattern=r"^spk\d+_")


def test_long_recording_is_windowed_and_its_windows_share_one_fold(tmp_path):
    root = tmp_path / "field"
    _tone(root / "birds" / "dawn.wav", 2000, duration_s=10.3, sr=16000)
    _tone(root / "birds" / "short.wav", 2100, duration_s=0.4)
    _tone(root / "birds" / "dusk.wav", 1900, duration_s=6.0, sr=16000)  # a second recording: birds on both sides
    for k in range(3):
        _tone(root / "cars" / f"c{k}.wav", 150, duration_s=3.0, seed=k)
    data = build(root, sr=SR, window_s=2.0, hop_s=1.0, min_duration_s=0.5, out_dir=tmp_path / "o", n_jobs=1)
    m = read_manifest(data.manifest)
    dawn = m[m["recording_id"] == "birds/dawn.wav"]
    # windows every second plus one ending at the end: 0, 1, ..., 8, then 8.3
    assert list(dawn["start_s"].round(2)) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 8.3]
    assert np.load(data.clips).shape == (len(m), 2 * SR)
    assert (dawn["recording_duration_s"].round(1) == 10.3).all() and dawn["group"].nunique() == 1
    rejected = read_rejected(data.rejected)
    assert list(rejected["filename"]) == ["short.wav"] and "--min-duration-s" in rejected["reason"].iloc[0]
    for tr, te in make_splits(m, scheme="group_kfold", k=2, seed=1):
        assert not set(m["recording_id"].iloc[tr]) & set(m["recording_id"].iloc[te])


def test_truncated_ogg_is_rejected_as_truncated_not_silent(tmp_path):
    root = tmp_path / "d"
    _tone(root / "a" / "ok.ogg", 440, duration_s=2.0)
    _tone(root / "b" / "ok.ogg", 550, duration_s=2.0)
    blob = (root / "a" / "ok.ogg").read_bytes()
    (root / "a" / "cut.ogg").write_bytes(blob[: len(blob) // 2])
    data = build(root, sr=SR, window_s=1.0, out_dir=tmp_path / "o", n_jobs=1)
    rejected = read_rejected(data.rejected)
    assert list(rejected["filename"]) == ["cut.ogg"]
    assert rejected["reason"].iloc[0].startswith("truncated") and "silent" not in rejected["reason"].iloc[0]


def test_layout_detection_names_what_it_found(tmp_path):
    root = tmp_path / "wrapped" / "inner"
    _tone(root / "x" / "a.wav", 300)
    assert detect(tmp_path / "wrapped") == ("folders", root)
    with pytest.raises(DatasetError, match="found the folders layout, not 'urbansound8k'"):
        scan(root, dataset="urbansound8k")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder or a .csv manifest"):
        detect(tmp_path / "notes.txt")
