"""Event tables on disk: exact Raven/Audacity/CSV text, round trips, and errors that name the file and row."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.detection.tables import (
    read_audacity,
    read_events_csv,
    read_raven,
    read_reference,
    write_audacity,
    write_detections_csv,
    write_raven,
)
from tasks.errors import DatasetError

RAVEN_HEADER = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\tScore"
)


@pytest.fixture
def events() -> pd.DataFrame:
    """Three events of one recording, class names that are a digit, hold a space, and are non-ASCII."""
    return pd.DataFrame(
        {
            "file": ["rec1.wav"] * 3,
            "start_s": [0.5, 2.25, 7.0],
            "end_s": [1.75, 3.0, 9.123456],
            "label": ["dog bark", "0", "café"],
            "score": [0.9, 0.75, 0.5],
        }
    )


def _same_events(read: pd.DataFrame, events: pd.DataFrame) -> None:
    assert read["label"].tolist() == events["label"].tolist()
    assert read["onset"].tolist() == pytest.approx(events["start_s"].tolist(), abs=1e-6)
    assert read["offset"].tolist() == pytest.approx(events["end_s"].tolist(), abs=1e-6)


def test_write_raven_exact_text_and_round_trip(tmp_path, events):
    path = write_raven(events, tmp_path / "rec1.selections.txt", high_freq_hz=11025)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == RAVEN_HEADER
    assert lines[1] == "1\tSpectrogram 1\t1\t0.500000\t1.750000\t0.000\t11025.000\tdog bark\t0.900000"
    assert [line.split("\t")[0] for line in lines[1:]] == ["1", "2", "3"]
    got = read_raven(path)
    _same_events(got, events)
    assert set(got["file"]) == {"rec1"} and got["row"].tolist() == [2, 3, 4]


def test_write_raven_of_no_events_is_the_header_only(tmp_path, events):
    path = write_raven(events.iloc[:0], tmp_path / "x.selections.txt", high_freq_hz=8000)
    assert path.read_text(encoding="utf-8") == RAVEN_HEADER + "\n"
    assert read_raven(path).empty


def test_write_audacity_exact_text_and_round_trip(tmp_path, events):
    path = write_audacity(events, tmp_path / "rec1.txt")
    assert path.read_text(encoding="utf-8") == (
        "0.500000\t1.750000\tdog bark\n2.250000\t3.000000\t0\n7.000000\t9.123456\tcafé\n"
    )
    _same_events(read_audacity(path), events)


def test_detections_csv_has_exact_columns_and_round_trips(tmp_path, events):
    path = write_detections_csv(events.assign(extra=1), tmp_path / "out" / "detections.csv")
    assert path.read_text(encoding="utf-8").splitlines()[0] == "file,start_s,end_s,label,score"
    got = read_events_csv(path)
    _same_events(got, events)
    assert got["file"].tolist() == ["rec1.wav"] * 3


def test_failed_write_leaves_no_file(tmp_path, events):
    events.loc[1, "label"] = "dog\tbark"
    with pytest.raises(DatasetError, match="tab or line break"):
        write_audacity(events, tmp_path / "rec1.txt")
    assert list(tmp_path.iterdir()) == []


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
    assert got.values.tolist() == [["r.flac", 0.0, 1.0, "Robin", 2], ["r.flac", 2.0, 3.5, "Wren", 5]]
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


def test_read_reference_directory_matches_tables_to_recordings(tmp_path, events):
    (tmp_path / "rec1.wav").write_bytes(b"")
    write_raven(events, tmp_path / "rec1.Table.1.selections.txt", high_freq_hz=8000)
    write_audacity(events.iloc[:1], tmp_path / "rec2.txt")  # no rec2 audio beside it: the bare stem
    (tmp_path / "more.csv").write_text("file,start_s,end_s,label\nrec3.ogg,1.0,2.0,café\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a table", encoding="utf-8")
    got = read_reference(tmp_path)
    assert got[["file", "label"]].values.tolist() == [
        ["rec3.ogg", "café"],
        ["rec1.wav", "dog bark"],
        ["rec1.wav", "0"],
        ["rec1.wav", "café"],
        ["rec2", "dog bark"],
    ]
    assert got["row"].tolist() == [2, 2, 3, 4, 1]


def test_read_reference_rejects_unknown_and_missing_paths(tmp_path):
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"x\.json: unknown reference format"):
        read_reference(tmp_path / "x.json")
    with pytest.raises(DatasetError, match="no reference tables"):
        read_reference(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        read_reference(tmp_path / "nope.csv")
