"""Frame levels of a real file and events trimmed to the sound they hold."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.detection.activity import frame_levels, trim_to_activity


@pytest.fixture
def burst_file(tmp_path, rng):
    """12 s at 8 kHz: faint noise with a 1.5-s tone burst at 4.0-5.5 s."""
    sr = 8000
    y = 0.001 * rng.standard_normal(12 * sr)
    t = np.arange(int(1.5 * sr)) / sr
    y[4 * sr : int(5.5 * sr)] += 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "burst.wav"
    sf.write(path, y.astype(np.float32), sr)
    return str(path)


@pytest.mark.parametrize("chunk_s", [600.0, 0.7])
def test_frame_levels_follow_the_burst_whatever_the_chunks(burst_file, chunk_s):
    db = frame_levels(burst_file, chunk_s=chunk_s)
    assert len(db) == 120
    loud = np.flatnonzero(db > db.min() + 20)
    assert loud[0] == 40 and loud[-1] == 54  # 4.0-5.5 s in 0.1-s frames
    np.testing.assert_allclose(db, frame_levels(burst_file), atol=1e-4)


def test_an_event_is_trimmed_to_its_sound_and_a_silent_one_dropped(burst_file):
    levels = {burst_file: frame_levels(burst_file)}
    events = pd.DataFrame(
        {
            "file": [burst_file, burst_file, "elsewhere.wav"],
            "start_s": [1.0, 7.0, 0.0],
            "end_s": [7.0, 12.0, 5.0],
            "label": ["tone", "tone", "x"],
            "score": [0.9, 0.8, 0.7],
        }
    )
    out = trim_to_activity(events, levels, min_snr_db=6.0)
    assert out["start_s"].tolist() == [4.0, 0.0] and out["end_s"].tolist() == [5.5, 5.0]  # 7-12 s holds no sound
    assert out["label"].tolist() == ["tone", "x"] and list(out.columns) == list(events.columns)


def test_localise_keeps_the_sound_most_of_its_windows_detected_and_drops_its_neighbour():
    """Two sounds in one recording, at 2.0-2.5 s and 6.0-6.5 s; windows of 5 s every 1 s. Class `a` is detected by
    the windows holding the first sound only; merged, its event spans 0-7 s and so holds the second sound too:
    localised, it is the first sound alone (every window over it says `a`; one in five over the second does)."""
    from tasks.detection.activity import localise
    from tasks.detection.events import merge_events

    frame = 0.1
    db = np.full(100, -60.0)  # 10 s of frames at -60 dBFS
    db[20:25] = -20.0  # 2.0-2.5 s
    db[60:65] = -20.0  # 6.0-6.5 s
    starts = np.arange(0.0, 7.0, 1.0)
    grid = pd.DataFrame({"file": "r.wav", "start_s": starts, "end_s": starts + 5.0})
    holds_first = (grid["start_s"] <= 2.0) & (grid["end_s"] >= 2.5)  # windows starting at 0, 1, 2
    detections = grid[holds_first].assign(label="a", score=[0.7, 0.9, 0.8])
    events = merge_events(detections)
    assert events[["start_s", "end_s"]].values.tolist() == [[0.0, 7.0]]
    out = localise(events, detections, grid, {"r.wav": db}, min_snr_db=6.0, frame_s=frame)
    assert out[["start_s", "end_s", "label"]].values.tolist() == [[2.0, 2.5, "a"]] and out["score"].item() == 0.9
