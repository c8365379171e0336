"""Annotated recordings: the windowing rule on hand-computed cases, the readers (reviews included), and the
annotations layout end to end on real generated recordings (Raven, Audacity, one CSV) into one manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.data.annotations import (
    BACKGROUND,
    audacity_kind,
    keep_background,
    label_windows,
    read_audacity,
    read_events_csv,
    read_raven,
    read_reference,
    window_grid,
)
from tasks.data.ingest import build, dataset_info
from tasks.data.inspect import summarize, summary_markdown
from tasks.data.layouts import detect, scan
from tasks.data.manifest import read_manifest, read_rejected
from tasks.data.split import make_splits
from tasks.detection.tables import write_audacity, write_raven
from tasks.errors import DatasetError

SR = 16000
SEVEN, DOG, CAFE = "7", "dog bark", "café"
RAVEN_HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation"


def _events(rows) -> pd.DataFrame:
    """(onset, offset, label[, kind]) tuples as an events table."""
    rows = [r if len(r) == 4 else (*r, "event") for r in rows]
    return pd.DataFrame(rows, columns=["onset", "offset", "label", "kind"])


def _labels(windows: pd.DataFrame) -> list[tuple[float, str | None, str]]:
    return [(s, lab, why) for s, lab, why in zip(windows["start_s"], windows["label"], windows["reason"])]


# --- the windowing rule, on cases computed by hand (window 1 s, hop 1 s unless said) ---


def test_window_grid_ends_at_the_recording_end_and_keeps_one_window_for_short_ones():
    assert window_grid(4.5, window_s=1.0, hop_s=1.0).tolist() == [0.0, 1.0, 2.0, 3.0, 3.5]
    assert window_grid(4.0, window_s=2.0, hop_s=1.0).tolist() == [0.0, 1.0, 2.0]
    assert window_grid(0.7, window_s=1.0, hop_s=0.5).tolist() == [0.0]


def test_event_shorter_than_the_window_labels_every_window_holding_most_of_it():
    got = label_windows(_events([(0.3, 0.6, "a")]), 3.0, window_s=1.0, hop_s=0.5, min_label_overlap=0.5)
    # [0,1) holds all of it; [0.5,1.5) holds 0.1 s of 0.3 s (1/3 < 0.5): touched, under the threshold
    assert _labels(got) == [
        (0.0, "a", "event"),
        (0.5, None, "under threshold"),
        (1.0, BACKGROUND, "background"),
        (1.5, BACKGROUND, "background"),
        (2.0, BACKGROUND, "background"),
    ]


def test_event_straddling_two_windows_goes_to_the_one_holding_most_of_it():
    got = label_windows(_events([(0.8, 1.3, "a")]), 3.0, window_s=1.0, hop_s=1.0, min_label_overlap=0.5)
    # [0,1): 0.2 of 0.5 s = 0.4; [1,2): 0.3 of 0.5 s = 0.6
    assert _labels(got) == [(0.0, None, "under threshold"), (1.0, "a", "event"), (2.0, BACKGROUND, "background")]
    assert got["touched"].tolist() == [("a",), ("a",), ()]


def test_long_event_counts_its_share_of_the_window():
    got = label_windows(_events([(1.8, 4.8, "a")]), 6.0, window_s=1.0, hop_s=1.0, min_label_overlap=0.5)
    # [1,2): 0.2 of the window (the 3-s event is longer than the window: its own share does not count)
    assert [lab for _, lab, _ in _labels(got)] == [BACKGROUND, None, "a", "a", "a", BACKGROUND]
    strict = label_windows(_events([(1.8, 4.8, "a")]), 6.0, window_s=1.0, hop_s=1.0, min_label_overlap=1.0)
    assert [why for _, _, why in _labels(strict)][1:5] == ["under threshold", "event", "event", "under threshold"]


def test_two_classes_in_one_window_drop_it():
    got = label_windows(
        _events([(0.1, 0.5, "a"), (0.6, 0.9, "b")]), 2.0, window_s=1.0, hop_s=1.0, min_label_overlap=0.5
    )
    assert _labels(got) == [(0.0, None, "several classes"), (1.0, BACKGROUND, "background")]
    assert got["touched"].iloc[0] == ("a", "b")
    # one class enough, another only touching: still two classes at once
    got = label_windows(
        _events([(0.0, 1.0, "a"), (0.95, 2.0, "b")]), 2.0, window_s=1.0, hop_s=1.0, min_label_overlap=0.5
    )
    assert _labels(got) == [(0.0, None, "several classes"), (1.0, "b", "event")]


def test_negatives_become_background_and_unreviewed_rows_drop_their_windows():
    events = _events([(0.0, 1.0, "a", "negative"), (1.2, 1.4, "", "negative"), (2.0, 2.5, "a", "unreviewed")])
    got = label_windows(events, 4.0, window_s=1.0, hop_s=1.0, min_label_overlap=0.5)
    assert _labels(got) == [
        (0.0, BACKGROUND, "negative"),
        (1.0, BACKGROUND, "background"),  # a rejected span under the threshold: plain background
        (2.0, None, "unreviewed"),
        (3.0, BACKGROUND, "background"),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_background_caps_plain_background_only_and_is_seeded(seed):
    reasons = ["event"] * 3 + ["negative"] * 2 + ["background"] * 10 + ["unreviewed"]
    keep = keep_background(reasons, ratio=1.0, seed=seed)
    assert keep[:5].all() and not keep[-1] and keep[5:15].sum() == 3
    assert (keep == keep_background(reasons, ratio=1.0, seed=seed)).all()
    assert keep_background(reasons, ratio=0.0, seed=seed)[5:].sum() == 0
    assert keep_background(reasons, ratio=100, seed=seed)[5:15].all()


# --- readers: reviews read back as kinds ---


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dog bark", ("dog bark", "event")),
        ("dog bark?", ("dog bark", "unreviewed")),
        ("dog bark?no", ("dog bark", "negative")),
        ("No", ("", "negative")),
        ("7", ("7", "event")),
        ("café?NO", ("café", "negative")),
    ],
)
def test_audacity_labels_carry_the_review(text, expected):
    assert audacity_kind(text) == expected


def test_raven_verdicts_are_kinds_and_tables_without_them_are_events(tmp_path):
    path = tmp_path / "r.selections.txt"
    path.write_text(
        "Selection\tBegin Time (s)\tEnd Time (s)\tAnnotation\tVerdict\n"
        "1\t0.0\t1.0\t7\tYes\n2\t1.0\t2.0\t7\tconfirmed\n3\t2.0\t3.0\tcafé\tNO\n4\t3.0\t4.0\tcafé\twrong\n"
        "5\t4.0\t5.0\tdog bark\t\n6\t5.0\t6.0\tdog bark\n",
        encoding="utf-8",
    )
    got = read_raven(path)
    assert got["kind"].tolist() == ["event", "event", "negative", "negative", "unreviewed", "unreviewed"]
    path.write_text(RAVEN_HEADER.replace("\tAnnotation", "\tAnnotation\tVerdict") + "\n1\tS\t1\t0\t1\t0\t1\t7\tmaybe\n")
    with pytest.raises(DatasetError, match=r"r\.selections\.txt, row 2: verdict 'maybe' is neither yes"):
        read_raven(path)
    plain = tmp_path / "p.selections.txt"
    plain.write_text(RAVEN_HEADER + "\n1\tS\t1\t0\t1\t0\t1\t7\n", encoding="utf-8")
    assert read_raven(plain)["kind"].tolist() == ["event"]


def test_detect_tables_reviewed_in_place_come_back_as_events_negatives_and_unreviewed(tmp_path):
    events = pd.DataFrame(
        {"start_s": [0.0, 1.0, 2.0], "end_s": [0.5, 1.5, 2.5], "label": [SEVEN, DOG, CAFE], "score": [0.9] * 3}
    )
    raven = write_raven(events, tmp_path / "r.selections.txt", high_freq_hz=8000)
    lines = raven.read_text(encoding="utf-8").splitlines()
    lines[1] += "yes"
    lines[2] += "no"
    raven.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_raven(raven)[["label", "kind"]].values.tolist() == [
        [SEVEN, "event"],
        [DOG, "negative"],
        [CAFE, "unreviewed"],
    ]
    audacity = write_audacity(events, tmp_path / "r.txt")
    text = audacity.read_text(encoding="utf-8").replace(f"{SEVEN}?", SEVEN).replace(f"{DOG}?", f"{DOG}?no")
    audacity.write_text(text, encoding="utf-8")
    assert read_audacity(audacity)[["label", "kind"]].values.tolist() == [
        [SEVEN, "event"],
        [DOG, "negative"],
        [CAFE, "unreviewed"],
    ]


def test_events_csv_verdict_and_kept_columns(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("path,onset,offset,label,group,verdict\na.wav,0,1,7,s1,yes\nb.wav,1,2,café,,no\n", encoding="utf-8")
    got = read_events_csv(path, keep=("group", "site"))
    assert got[["file", "kind", "group", "site"]].values.tolist() == [
        ["a.wav", "event", "s1", ""],
        ["b.wav", "negative", "", ""],
    ]


def test_raven_default_label_column_and_one_row_per_selection(tmp_path):
    path = tmp_path / "r.selections.txt"
    path.write_text(
        "Selection\tView\tBegin Time (s)\tEnd Time (s)\tclass\tSpecies\n"
        "1\tWaveform 1\t0.0\t1.0\tbird\tRobin\n"
        "1\tSpectrogram 1\t0.0\t1.0\tbird\tRobin\n"
        "\n"
        "2\tSpectrogram 1\t2.0\t3.5\tbird\tWren\n",
        encoding="utf-8",
    )
    got = read_raven(path, file="r.flac")
    assert got.values.tolist() == [["r.flac", 0.0, 1.0, "Robin", 2, "event"], ["r.flac", 2.0, 3.5, "Wren", 5, "event"]]
    assert read_raven(path, label_column="Class")["label"].tolist() == ["bird", "bird"]
    with pytest.raises(DatasetError, match=r"r\.selections\.txt: no label column.*'Notes'.*'Selection', 'View'"):
        read_raven(path, label_column="Notes")


def test_audacity_skips_frequency_lines_and_counts_rows(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("1.0\t2.0\tdog bark\n\\\t100.0\t4000.0\n3.0\t-2.0\tcafé\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"a\.txt, row 3: offset -2 s is not after onset 3 s"):
        read_audacity(path)


RAVEN_ROWS = "Selection\tBegin Time (s)\tEnd Time (s)\tAnnotation\n1\t0.0\t1.0\t0\n"
AUDACITY_ROWS = "0.0\t1.0\t0\n"
CSV_ROWS = "path,onset,offset,label\nrec1.wav,0.0,1.0,0\n"


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("r.selections.txt", RAVEN_ROWS + "2\tsoon\t3.0\tdog bark\n", r"r\.selections\.txt, row 3: onset 'soon'"),
        ("r.selections.txt", RAVEN_ROWS + "2\t3.0\t3.0\tcafé\n", r"r\.selections\.txt, row 3: offset 3 s.*<= 0"),
        ("r.selections.txt", "Selection\tBegin Time (s)\tAnnotation\n", r"r\.selections\.txt: no end time column"),
        ("a.txt", AUDACITY_ROWS + "\n-1.0\t2.0\tcafé\n", r"a\.txt, row 3: onset -1 s is negative"),
        ("a.txt", AUDACITY_ROWS + "1.0\t2.0x\tcafé\n", r"a\.txt, row 2: offset '2\.0x' is not a number"),
        ("a.txt", AUDACITY_ROWS + "1.0\n", r"a\.txt, row 2: expected 'start<TAB>end<TAB>label'"),
        ("a.txt", AUDACITY_ROWS + "1.0\t2.0\t?\n", r"a\.txt, row 2: the label is empty"),
        ("e.csv", CSV_ROWS + "rec1.wav,2.0,1.5,dog bark\n", r"e\.csv, row 3: offset 1\.5 s is not after onset 2 s"),
        ("e.csv", CSV_ROWS + "rec1.wav,nan,1.5,dog bark\n", r"e\.csv, row 3: onset 'nan' is not a finite"),
        ("e.csv", CSV_ROWS + "rec2.wav,1.0,1.5,\n", r"e\.csv, row 3: the label is empty"),
        ("e.csv", "file,onset,label\nrec1.wav,0.0,0\n", r"e\.csv: no offset column \(looked for \['offset', 'end_s'\]"),
    ],
)
def test_reader_errors_name_the_file_and_row(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=match):
        read_reference(path)


def test_read_reference_directory_matches_tables_to_recordings(tmp_path):
    events = pd.DataFrame(
        {"start_s": [0.5, 2.25, 7.0], "end_s": [1.75, 3.0, 9.1], "label": [DOG, "0", CAFE], "score": [0.9] * 3}
    )
    (tmp_path / "rec1.wav").write_bytes(b"")
    write_raven(events, tmp_path / "rec1.Table.1.selections.txt", high_freq_hz=8000)
    write_audacity(events.iloc[:1], tmp_path / "rec2.txt")  # no rec2 audio beside it: the bare stem
    (tmp_path / "more.csv").write_text("file,start_s,end_s,label\nrec3.ogg,1.0,2.0,café\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a table", encoding="utf-8")
    got = read_reference(tmp_path)
    assert got[["file", "label"]].values.tolist() == [
        ["rec3.ogg", CAFE],
        ["rec1.wav", DOG],
        ["rec1.wav", "0"],
        ["rec1.wav", CAFE],
        ["rec2", DOG],
    ]
    assert got["row"].tolist() == [2, 2, 3, 4, 1]
    assert got["kind"].tolist() == ["event"] + ["unreviewed"] * 4


def test_read_reference_rejects_unknown_and_missing_paths(tmp_path):
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"x\.json: unknown reference format"):
        read_reference(tmp_path / "x.json")
    with pytest.raises(DatasetError, match="no reference tables"):
        read_reference(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        read_reference(tmp_path / "nope.csv")


# --- the annotations layout on generated long recordings ---

# Each recording: duration and events (onset, offset, label, kind). Sounds: "7" a 440-Hz tone, "dog bark" a
# 1200-Hz tone, "café" noise in 3-4 kHz, rejected detections a 2500-Hz tone, over faint broadband noise.
RECORDINGS = {
    "site1_a": (
        20.0,
        [
            (2.0, 4.0, SEVEN, "event"),
            (8.2, 8.6, DOG, "event"),
            (12.0, 15.0, CAFE, "event"),
            (16.7, 17.5, SEVEN, "event"),
        ],
    ),
    "site1_b": (
        24.0,
        [
            (3.0, 3.5, DOG, "event"),
            (3.6, 4.4, CAFE, "event"),
            (6.5, 7.5, "", "negative"),
            (10.0, 11.0, SEVEN, "unreviewed"),
            (15.0, 17.0, SEVEN, "negative"),
            (19.0, 21.0, SEVEN, "event"),
        ],
    ),
    "site2_c": (
        30.0,
        [
            (5.0, 9.0, CAFE, "event"),
            (12.0, 12.6, SEVEN, "unreviewed"),
            (20.0, 22.0, DOG, "negative"),
            (25.0, 25.5, DOG, "event"),
        ],
    ),
}
# Windows of 2 s every 1 s, worked out by hand: start -> label (None: dropped) per recording.
B, N = BACKGROUND, "negative"
EXPECTED = {
    "site1_a": [B, SEVEN, SEVEN, SEVEN, B, B, B, DOG, DOG, B, B, CAFE, CAFE, CAFE, CAFE, "under", SEVEN, SEVEN, B],
    "site1_b": [
        *[B, B, "several", "several", CAFE, B, N, B, B, "unreviewed", "unreviewed", B, B, B, N, N, N, B],
        *[SEVEN, SEVEN, SEVEN, B, B],
    ],
    "site2_c": [
        *[B, B, B, B, CAFE, CAFE, CAFE, CAFE, CAFE, B, B, "unreviewed", "unreviewed", B, B, B, B, B, B, N, N, N],
        *[B, B, DOG, DOG, B, B, B],
    ],
}


def _sound(label: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    if label == "":  # what a rejected detection really was: another sound
        return 0.3 * np.sin(2 * np.pi * 2500 * t)
    if label == SEVEN:
        return 0.3 * np.sin(2 * np.pi * 440 * t)
    if label == DOG:
        return 0.3 * np.sin(2 * np.pi * 1200 * t)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spectrum[(freqs < 3000) | (freqs > 4000)] = 0
    band = np.fft.irfft(spectrum, n)
    return 0.3 * band / (np.abs(band).max() + 1e-9)


def _write_recordings(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The RECORDINGS as 16-kHz WAV files with their sounds at the annotated times."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, (duration, events) in RECORDINGS.items():
        y = 0.003 * rng.standard_normal(round(SR * duration))
        for onset, offset, label, kind in events:
            a, b = round(SR * onset), round(SR * offset)
            y[a:b] += _sound("" if kind == "negative" else label, b - a, rng)
        paths[stem] = folder / f"{stem}.wav"
        sf.write(paths[stem], y.astype(np.float32), SR)
    return paths


def _annotated_folder(root: Path) -> Path:
    """site1_a: Raven's default table name, no verdicts; site1_b: Audacity with review marks; site2_c: Raven with a
    Verdict column and the label in Species."""
    folder = root / "annotated"
    _write_recordings(folder)
    _, events = RECORDINGS["site1_a"]
    (folder / "site1_a.Table.1.selections.txt").write_text(
        RAVEN_HEADER
        + "\n"
        + "".join(f"{i}\tSpectrogram 1\t1\t{a}\t{b}\t0\t8000\t{lab}\n" for i, (a, b, lab, _) in enumerate(events, 1)),
        encoding="utf-8",
    )
    mark = {"event": "", "unreviewed": "?", "negative": "?no"}
    _, events = RECORDINGS["site1_b"]
    (folder / "site1_b.txt").write_text(
        "".join(f"{a}\t{b}\t{lab}{mark[kind]}\n" if lab else f"{a}\t{b}\tno\n" for a, b, lab, kind in events),
        encoding="utf-8",
    )
    verdict = {"event": "Y", "unreviewed": "", "negative": "No"}
    _, events = RECORDINGS["site2_c"]
    (folder / "site2_c.selections.txt").write_text(
        "Selection\tBegin Time (s)\tEnd Time (s)\tSpecies\tVerdict\n"
        + "".join(f"{i}\t{a}\t{b}\t{lab}\t{verdict[kind]}\n" for i, (a, b, lab, kind) in enumerate(events, 1)),
        encoding="utf-8",
    )
    return folder


def _events_csv(root: Path, *, group: bool = False) -> Path:
    """The confirmed events of every recording in one CSV beside an audio/ folder (relative paths)."""
    _write_recordings(root / "audio")
    lines = ["path,onset,offset,label" + (",group" if group else "")]
    for stem, (_, events) in RECORDINGS.items():
        for a, b, lab, kind in events:
            if kind == "event":
                lines.append(f"audio/{stem}.wav,{a},{b},{lab}" + (f",{stem[:5]}" if group else ""))
    path = root / "events.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def annotated(tmp_path_factory) -> Path:
    return _annotated_folder(tmp_path_factory.mktemp("ann"))


def _window_map(listing) -> dict[tuple[str, float], str]:
    recs = listing.recordings
    return {(Path(p).stem, round(s, 3)): lab for p, s, lab in zip(recs["path"], recs["start_s"], recs["label"])}


def test_folder_of_annotated_recordings_is_detected_before_folders(annotated):
    assert detect(annotated) == ("annotations", annotated)


def test_every_window_gets_the_hand_computed_label(annotated):
    listing = scan(annotated, window_s=2.0, hop_s=1.0, background_ratio=100)
    assert listing.layout == "annotations" and listing.classes == sorted([SEVEN, DOG, CAFE, BACKGROUND])
    assert listing.window_s == 2.0 and listing.hop_s == 1.0
    got = _window_map(listing)
    for stem, labels in EXPECTED.items():
        for start, want in enumerate(labels):
            key = (stem, float(start))
            if want in (B, N):
                assert got.get(key) == BACKGROUND, key
            elif want in (SEVEN, DOG, CAFE):
                assert got.get(key) == want, key
            else:
                assert key not in got, key
    assert len(got) == sum(lab in (B, N, SEVEN, DOG, CAFE) for labels in EXPECTED.values() for lab in labels)
    recs = listing.recordings
    assert recs["fold"].isna().all() and ((recs["end_s"] - recs["start_s"]) == 2.0).all()
    assert set(recs["group"]) == {"site1_a.wav", "site1_b.wav", "site2_c.wav"}  # groups = recordings


def test_counts_per_class_background_cap_and_dropped(annotated):
    listing = scan(annotated, window_s=2.0, hop_s=1.0)  # --background-ratio 1: background <= labelled windows
    counts = listing.counts
    assert counts["per_class"] == {
        SEVEN: {
            "events": 3,
            "unreviewed_rows": 2,
            "windows": 8,
            "under threshold": 1,
            "several classes": 0,
            "unreviewed": 4,
        },
        CAFE: {
            "events": 3,
            "unreviewed_rows": 0,
            "windows": 10,
            "under threshold": 0,
            "several classes": 2,
            "unreviewed": 0,
        },
        DOG: {
            "events": 3,
            "unreviewed_rows": 0,
            "windows": 4,
            "under threshold": 0,
            "several classes": 2,
            "unreviewed": 0,
        },
    }
    assert counts["negative_rows"] == 3
    assert counts["background"] == {"kept": 22, "total": 35, "ratio": 1.0, "negative": 7}
    assert counts["dropped"] == {"under threshold": 1, "several classes": 2, "unreviewed": 4}
    labels = listing.recordings["label"].value_counts().to_dict()
    assert labels == {BACKGROUND: 22 + 7, CAFE: 10, SEVEN: 8, DOG: 4}
    assert any("windows per class: 7 8, café 10, dog bark 4" in n for n in listing.notes)
    assert any("background: 22 of 35 kept" in n and "+ 7 from rejected" in n for n in listing.notes)
    assert any(n.startswith("dropped windows: 7 (under threshold 1 (7 1); several classes 2") for n in listing.notes)


def test_background_choice_follows_the_seed(annotated):
    def background(seed: int, ratio: float = 0.5) -> set:
        listing = scan(annotated, window_s=2.0, hop_s=1.0, background_ratio=ratio, seed=seed)
        return {k for k, lab in _window_map(listing).items() if lab == BACKGROUND}

    first = background(0)
    assert first == background(0)
    assert len(first) == 11 + 7  # half of 22 labelled windows, plus every rejected detection's window
    assert any(background(s) != first for s in (1, 2, 3))
    assert len(background(0, ratio=0)) == 7  # rejected detections' windows are always kept


def test_build_cuts_each_window_as_one_segment_with_auto_window(annotated, tmp_path):
    data = build(annotated, sr=SR, window_s="auto", out_dir=tmp_path / "o", n_jobs=1)
    # confirmed events last 0.4-4.0 s: the 95th percentile of the 9 is 3.6 s; hop half of it
    assert (data.layout, data.window_s, data.hop_s) == ("annotations", 3.6, 1.8)
    listing = scan(annotated)
    manifest = read_manifest(data.manifest)
    assert len(manifest) == len(listing.recordings) == data.n_clips and data.n_rejected == 0
    assert np.allclose(manifest["duration_s"], 3.6)
    assert np.load(data.clips, mmap_mode="r").shape == (len(manifest), round(3.6 * SR))
    ordered = manifest.sort_values(["path", "start_s"])
    expected = listing.recordings.sort_values(["path", "start_s"])
    assert np.allclose(ordered["start_s"], expected["start_s"])
    assert ordered["label"].tolist() == expected["label"].tolist()
    assert not data.has_folds and data.has_groups
    info = dataset_info(data)
    assert info["annotations"]["background"]["negative"] > 0
    text = summary_markdown(summarize(manifest, read_rejected(data.rejected), info))
    assert "## Annotations (3 recordings)" in text and "| 7 | 3 | 2 |" in text
    assert build(annotated, sr=SR, window_s="auto", out_dir=tmp_path / "o", n_jobs=1) == data  # reused


def test_segments_hold_the_labelled_sounds(annotated, tmp_path):
    data = build(annotated, sr=SR, window_s=2.0, hop_s=1.0, out_dir=tmp_path / "o", n_jobs=1)
    manifest = read_manifest(data.manifest)
    clips = np.load(data.clips)
    assert clips.shape == (len(manifest), 2 * SR) and np.allclose(manifest["duration_s"], 2.0)
    freqs = np.fft.rfftfreq(2 * SR, 1 / SR)
    for label, lo, hi in ((SEVEN, 400, 480), (DOG, 1150, 1250), (CAFE, 3000, 4000)):
        for clip in clips[(manifest["label"] == label).to_numpy()]:
            power = np.abs(np.fft.rfft(clip)) ** 2
            assert power[(freqs >= lo) & (freqs <= hi)].sum() > 0.3 * power.sum(), label
    for clip in clips[(manifest["label"] == BACKGROUND).to_numpy()]:  # noise, or the rejected 2500-Hz tone
        power = np.abs(np.fft.rfft(clip)) ** 2
        for lo, hi in ((400, 480), (1150, 1250), (3000, 4000)):
            assert power[(freqs >= lo) & (freqs <= hi)].sum() < 0.3 * power.sum()
    a = manifest[manifest["filename"] == "site1_a.wav"].set_index("start_s")
    assert a.loc[1.0, "label"] == SEVEN and a.loc[8.0, "label"] == DOG and 15.0 not in a.index


def test_groups_are_recordings_or_coarser_and_group_kfold_keeps_them_together(annotated, tmp_path):
    data = build(annotated, sr=SR, window_s=2.0, hop_s=1.0, out_dir=tmp_path / "o", n_jobs=1)
    manifest = read_manifest(data.manifest)
    assert (manifest.groupby("group")["filename"].nunique() == 1).all() and manifest["group"].nunique() == 3
    splits = make_splits(manifest, scheme="auto", k=3, seed=0)  # no folds: StratifiedGroupKFold over recordings
    for train, test in splits:
        assert not set(manifest["group"].iloc[train]) & set(manifest["group"].iloc[test])
    assert sorted(len(test) for _, test in splits) == sorted(manifest.groupby("group").size())
    coarse = build(
        annotated, sr=SR, window_s=2.0, hop_s=1.0, group_pattern=r"^(site\d)_", out_dir=tmp_path / "o", n_jobs=1
    )
    groups = read_manifest(coarse.manifest).groupby("group")["filename"].unique().map(sorted).to_dict()
    assert groups == {"site1": ["site1_a.wav", "site1_b.wav"], "site2": ["site2_c.wav"]}


def test_one_events_csv_for_all_recordings(tmp_path):
    path = _events_csv(tmp_path)
    assert detect(path) == ("annotations", path)
    listing = scan(path, window_s=2.0, hop_s=1.0, background_ratio=100)
    assert listing.name == "events" and set(listing.recordings["group"]) == {
        "audio/site1_a.wav",
        "audio/site1_b.wav",
        "audio/site2_c.wav",
    }
    got = _window_map(listing)
    # the same confirmed events as the tables: the same labelled windows; unreviewed and rejected rows are absent,
    # so their windows are background here
    for stem, labels in EXPECTED.items():
        for start, want in enumerate(labels):
            if want in (SEVEN, DOG, CAFE):
                assert got[(stem, float(start))] == want
            elif want in (B, N, "unreviewed"):
                assert got[(stem, float(start))] == BACKGROUND
    grouped = scan(_events_csv(tmp_path / "g", group=True), window_s=2.0, hop_s=1.0)
    assert set(grouped.recordings["group"]) == {"site1", "site2"}


def test_a_manifest_csv_with_regions_is_still_the_csv_layout(tmp_path):
    _write_recordings(tmp_path / "audio")
    path = tmp_path / "manifest.csv"
    path.write_text("path,label,start_s,end_s\naudio/site1_a.wav,7,2.0,4.0\n", encoding="utf-8")
    assert detect(path) == ("csv", path)


def _one_recording(root: Path, table_name: str, text: str) -> Path:
    folder = root / "one"
    folder.mkdir(parents=True)
    sf.write(folder / "rec.wav", (0.01 * np.random.default_rng(0).standard_normal(SR * 20)).astype(np.float32), SR)
    (folder / table_name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "name, text, match",
    [
        (
            "rec.selections.txt",
            "Selection\tBegin Time (s)\tAnnotation\n1\t0\t7\n",
            r"rec\.selections\.txt: no end time column",
        ),
        ("rec.txt", "1.0\t2.0\t7\nsoon\t3.0\t7\n", r"rec\.txt, row 2: onset 'soon' is not a number"),
        ("rec.txt", "1.0\t2.0\t7\n3.0\t3.0\tcafé\n", r"rec\.txt, row 2: offset 3 s is not after onset 3 s"),
        (
            "rec.selections.txt",
            RAVEN_HEADER + "\n1\tS\t1\t1.0\t2.0\t0\t8000\t7\n2\tS\t1\t18.0\t21.0\t0\t8000\tdog bark\n",
            r"rec\.selections\.txt, row 3: the event ends at 21 s, past the end of rec\.wav \(20\.00 s\)",
        ),
    ],
)
def test_bad_tables_name_the_file_and_row(tmp_path, name, text, match):
    folder = _one_recording(tmp_path, name, text)
    with pytest.raises(DatasetError, match=match):
        scan(folder, window_s=2.0)


def test_events_within_the_end_tolerance_are_accepted(tmp_path):
    folder = _one_recording(tmp_path, "rec.txt", "1.0\t2.0\t7\n18.0\t20.4\tcafé\n")
    assert scan(folder, window_s=2.0).counts["per_class"][CAFE]["windows"] == 2


def test_tables_and_rows_naming_missing_recordings_fail(tmp_path):
    folder = _one_recording(tmp_path, "rec.txt", "1.0\t2.0\t7\n")
    (folder / "ghost.selections.txt").write_text(RAVEN_HEADER + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"ghost\.selections\.txt: no recording beside this table"):
        scan(folder, window_s=2.0)
    path = _events_csv(tmp_path / "csv")
    path.write_text(path.read_text(encoding="utf-8") + "audio/none.wav,1.0,2.0,7\n", encoding="utf-8")
    n_rows = len(path.read_text(encoding="utf-8").splitlines())
    with pytest.raises(DatasetError, match=rf"events\.csv, row {n_rows}: recording 'audio/none\.wav' not found"):
        scan(path, window_s=2.0)


def test_recordings_without_a_table_are_left_out_and_noted(tmp_path):
    folder = _one_recording(tmp_path, "rec.txt", "1.0\t2.0\t7\n")
    sf.write(folder / "other.wav", np.zeros(SR, np.float32), SR)
    listing = scan(folder, window_s=2.0)
    assert set(Path(p).name for p in listing.recordings["path"]) == {"rec.wav"}
    assert any("1 recording(s) without an event table left out: other.wav" in n for n in listing.notes)


def test_label_column_chooses_the_raven_column(tmp_path):
    text = "Selection\tBegin Time (s)\tEnd Time (s)\tAnnotation\tCall type\n1\t1.0\t3.0\tbird\tsong\n"
    folder = _one_recording(tmp_path, "rec.selections.txt", text)
    assert scan(folder, window_s=2.0).classes == [BACKGROUND, "bird"]
    assert scan(folder, window_s=2.0, label_column="Call type").classes == [BACKGROUND, "song"]
