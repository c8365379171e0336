"""Event tables on disk: exact Raven/Audacity/CSV text for review, and round trips through the readers
(tasks/data/annotations.py, tested in tests/data/test_annotations.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.data.annotations import read_audacity, read_events_csv, read_raven
from tasks.detection.tables import write_audacity, write_detections_csv, write_raven
from tasks.errors import DatasetError

RAVEN_HEADER = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\tScore\tVerdict"
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
    assert lines[1] == "1\tSpectrogram 1\t1\t0.500000\t1.750000\t0.000\t11025.000\tdog bark\t0.900000\t"
    assert [line.split("\t")[0] for line in lines[1:]] == ["1", "2", "3"]
    got = read_raven(path)
    _same_events(got, events)
    assert set(got["file"]) == {"rec1"} and got["row"].tolist() == [2, 3, 4]
    assert set(got["kind"]) == {"unreviewed"}  # the Verdict column is empty until someone reviews it


def test_write_raven_of_no_events_is_the_header_only(tmp_path, events):
    path = write_raven(events.iloc[:0], tmp_path / "x.selections.txt", high_freq_hz=8000)
    assert path.read_text(encoding="utf-8") == RAVEN_HEADER + "\n"
    assert read_raven(path).empty


def test_write_audacity_exact_text_and_round_trip(tmp_path, events):
    path = write_audacity(events, tmp_path / "rec1.txt")
    assert path.read_text(encoding="utf-8") == (
        "0.500000\t1.750000\tdog bark?\n2.250000\t3.000000\t0?\n7.000000\t9.123456\tcafé?\n"
    )
    got = read_audacity(path)
    _same_events(got, events)
    assert set(got["kind"]) == {"unreviewed"}


def test_detections_csv_has_exact_columns_and_round_trips(tmp_path, events):
    path = write_detections_csv(events.assign(extra=1), tmp_path / "out" / "detections.csv")
    assert path.read_text(encoding="utf-8").splitlines()[0] == "file,start_s,end_s,label,score"
    got = read_events_csv(path)
    _same_events(got, events)
    assert got["file"].tolist() == ["rec1.wav"] * 3
    assert set(got["kind"]) == {"event"}


def test_failed_write_leaves_no_file(tmp_path, events):
    events.loc[1, "label"] = "dog\tbark"
    with pytest.raises(DatasetError, match="tab or line break"):
        write_audacity(events, tmp_path / "rec1.txt")
    assert list(tmp_path.iterdir()) == []
