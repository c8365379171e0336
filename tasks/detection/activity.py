"""Where a recording is louder than its own background, frame by frame: the sharper timeline that trims a
window-long detection to the sound in it (a 5-s window localises an event to 5 s; its active frames to 0.1 s)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tasks.data.audio import decode_region, probe

FRAME_S = 0.1
BACKGROUND_PERCENTILE = 50  # the recording's background: its median frame level (sounds are the exception)
SPLIT_GAP_S = 0.3  # quieter stretches longer than this split an event's sound into separate runs
MAJORITY = 0.5  # a run keeps the event's class when at least this share of the windows over it detected the class


def frame_levels(path: str | os.PathLike, *, frame_s: float = FRAME_S, chunk_s: float = 600.0) -> np.ndarray:
    """Each frame_s-long frame's RMS level in dB full scale, over the whole recording (decoded chunk_s at a time at
    its own rate: memory stays bounded for hours of audio)."""
    info = probe(path)
    sr, total = int(info["sample_rate"]), float(info["duration_s"])
    frame = max(1, round(sr * frame_s))
    chunk = max(frame, int(chunk_s / frame_s) * frame)  # whole frames per chunk, so no frame straddles two
    out, start = [], 0
    while start < total * sr:
        y, _ = decode_region(path, sr=sr, start_s=start / sr, end_s=(start + chunk) / sr, allow_silent=True)
        n = len(y) // frame
        if n == 0:
            break
        rms = np.sqrt(np.mean(np.square(y[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))
        out.append((20 * np.log10(np.maximum(rms, 1e-10))).astype(np.float32))
        start += chunk
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def localise(
    events: pd.DataFrame,
    detections: pd.DataFrame,
    grid: pd.DataFrame,
    levels: dict[str, np.ndarray],
    *,
    min_snr_db: float,
    frame_s: float = FRAME_S,
) -> pd.DataFrame:
    """Window-long events narrowed to the sound in them: each event's frames at least min_snr_db above its
    recording's background (its median frame level) form runs (split at quieter stretches over SPLIT_GAP_S); a run
    keeps the event's class when at least MAJORITY of the windows over its middle detected that class (a
    neighbouring sound that only shares some of the event's windows does not), and becomes an event of its own.
    `detections`: the window detections the events were merged from; `grid`: every window (file, start_s, end_s).
    Recordings without levels keep their events as they are."""
    if events.empty:
        return events
    rows = []
    gap = max(1, int(round(SPLIT_GAP_S / frame_s)))
    for file, evs in events.groupby("file", sort=False):
        db = levels.get(file)
        if db is None or not len(db):
            rows += [ev._asdict() for ev in evs.itertuples(index=False)]
            continue
        background = float(np.percentile(db, BACKGROUND_PERCENTILE))
        starts, ends = (grid.loc[grid["file"] == file, c].to_numpy() for c in ("start_s", "end_s"))
        det = detections[detections["file"] == file]
        for ev in evs.itertuples(index=False):
            a, b = int(np.floor(ev.start_s / frame_s + 1e-9)), int(np.ceil(ev.end_s / frame_s - 1e-9))
            active = a + np.flatnonzero(db[a:b] >= background + min_snr_db)
            mine = det[det["label"] == ev.label]
            for run in np.split(active, np.flatnonzero(np.diff(active) > gap) + 1) if len(active) else []:
                start, end = max(ev.start_s, run[0] * frame_s), min(ev.end_s, (run[-1] + 1) * frame_s)
                middle = (start + end) / 2
                n_over = int(((starts <= middle) & (ends > middle)).sum())
                hits = mine[(mine["start_s"] <= middle) & (mine["end_s"] > middle)]
                if n_over and len(hits) / n_over >= MAJORITY:
                    rows.append(
                        {
                            **ev._asdict(),
                            "start_s": round(start, 6),
                            "end_s": round(end, 6),
                            "score": float(hits["score"].max()),
                        }
                    )
    out = pd.DataFrame(rows, columns=events.columns).astype(events.dtypes.to_dict())
    return out.sort_values(["file", "start_s", "label"], kind="stable", ignore_index=True)


def trim_to_activity(
    events: pd.DataFrame, levels: dict[str, np.ndarray], *, min_snr_db: float, frame_s: float = FRAME_S
) -> pd.DataFrame:
    """Each event trimmed to its first and last frame at least min_snr_db above its recording's background (the
    20th percentile of its frames); an event with no such frame is dropped. Events of recordings without levels
    are kept as they are."""
    if events.empty:
        return events
    rows = []
    floors = {f: float(np.percentile(db, BACKGROUND_PERCENTILE)) for f, db in levels.items() if len(db)}
    for ev in events.itertuples(index=False):
        db = levels.get(ev.file)
        if db is None or ev.file not in floors:
            rows.append(ev._asdict())
            continue
        a, b = int(np.floor(ev.start_s / frame_s + 1e-9)), int(np.ceil(ev.end_s / frame_s - 1e-9))
        active = np.flatnonzero(db[a:b] >= floors[ev.file] + min_snr_db)
        if not len(active):
            continue
        start = max(ev.start_s, (a + active[0]) * frame_s)
        end = min(ev.end_s, (a + active[-1] + 1) * frame_s)
        rows.append({**ev._asdict(), "start_s": round(start, 6), "end_s": round(end, 6)})
    return pd.DataFrame(rows, columns=events.columns).astype(events.dtypes.to_dict())
