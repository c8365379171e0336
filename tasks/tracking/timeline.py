"""Scores on a timeline: a model's windows over a whole recording, every hop, read a chunk at a time (memory does not
grow with the recording's length) and scored in batches; the served model's `output="windows"` and `soundflow
detect` both use it."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from tasks.data.audio import SILENCE_PEAK, decode_region, probe
from tasks.data.windows import frame_levels_db, loudness_db
from tasks.errors import AudioDecodeError, SoundflowError

WINDOW_COLUMNS = (
    "file",
    "start_s",
    "end_s",
    "loudness_db",
    "peak_db",
    "floor_db",
    "partial",
    "error",
)  # beside the class columns
# An mp3 decoder needs a few frames after a seek before its output matches a decode from the start (bit
# reservoir, overlapping transforms); each chunk is read from this much earlier and the lead-in dropped.
_LEAD_S = 0.25
_BATCH_SAMPLES = 1 << 22  # window samples scored at once per rate (16 MB of float32)


def score_windows(model: Any, path: str, *, hop_s: float | None = None, chunk_s: float = 600.0) -> pd.DataFrame:
    """Scores on a timeline: one row per window of the model's window_s, every hop_s (default min(1 s, window_s)),
    with file, start_s, end_s, one probability column per class (named by the class), loudness_db, peak_db and
    floor_db (its loudest and quietest 0.1-s frame) and partial. `model`: a loaded AudioClassifier.

    The last window is zero-padded and flagged partial when audio remains after the last full window (a recording
    shorter than one window is one partial window; end_s is where the audio ends). The file is decoded chunk_s
    at a time and resampled as one stream, so memory stays bounded for hours of audio and the scores are those
    of the whole file decoded at once. AudioDecodeError for an unusable file."""
    out, peak = score_timeline(model, partial(_file_pieces, path, chunk_s=chunk_s), file=str(path), hop_s=hop_s)
    if peak < SILENCE_PEAK:
        raise AudioDecodeError(path, f"all-silent (peak {peak:.1e} < {SILENCE_PEAK:.0e})")
    return out


Pieces = Iterator[tuple[dict[int, np.ndarray], bool]]  # (the next samples at each rate, whether they are the last)


def score_timeline(
    model: Any, source: Callable[[list[int]], Pieces], *, file: str, hop_s: float | None
) -> tuple[pd.DataFrame, float]:
    """(score_windows' frame, the peak sample at the model's rate) of the recording source(rates) streams.

    Each window is cut as soon as its samples are in at every rate (a resampler gives its output a little late);
    the samples before the next window's start are then dropped, so only about one piece is held at a time."""
    cfg = model.config
    sr, names = int(cfg["sample_rate"]), [str(c) for c in cfg["class_names"]]
    if clash := sorted(set(names) & set(WINDOW_COLUMNS)):
        raise SoundflowError(f"class name(s) {clash} are also column names of the windows output: rename the classes")
    window_s = float(cfg.get("window_s") or cfg["duration_s"])
    hop_s = min(1.0, window_s) if hop_s is None else float(hop_s)
    if not (math.isfinite(hop_s) and hop_s > 0):
        raise ValueError(f"hop_s must be a positive number of seconds, got {hop_s!r}")
    rates = [sr, *sorted({int(m.get("sample_rate") or sr) for m in cfg["members"]} - {sr})]  # members' own rates
    width = {r: round(r * window_s) for r in rates}
    hop, batch = max(1, round(sr * hop_s)), max(1, _BATCH_SAMPLES // width[sr])
    buf = {r: np.zeros(0, np.float32) for r in rates}
    base = dict.fromkeys(rates, 0)  # the sample index (at each rate) of buf[rate][0]
    pending: dict[int, list[np.ndarray]] = {r: [] for r in rates}  # windows cut, not scored yet
    starts, cut_short, proba, level, peaks, floors = [], [], [], [], [], []
    peak, k, n = 0.0, 0, 0
    for pieces, last in source(rates):
        for r in rates:
            buf[r] = np.concatenate([buf[r], pieces[r]]) if len(buf[r]) else pieces[r]
        peak = max(peak, float(np.max(np.abs(pieces[sr]))) if len(pieces[sr]) else 0.0)
        n, first = base[sr] + len(buf[sr]), len(starts)  # n: samples at sr so far, all of them once `last`
        while True:
            s = k * hop
            if not last:  # not at the end yet: every window whose samples are in is a full one
                if any(round(s / sr * r) + width[r] > base[r] + len(buf[r]) for r in rates):
                    break
                full = True
            else:  # then one partial window, if audio follows the last full one
                full = s + width[sr] <= n
                if not full and (s >= n or (k and (k - 1) * hop + width[sr] >= n) or (cut_short and cut_short[-1])):
                    break
            starts.append(s)
            cut_short.append(not full)
            k += 1
        while first < len(starts) or (last and pending[sr]):  # cut the new windows; score full batches, the rest last
            take = starts[first : first + batch - len(pending[sr])]
            for r in rates:
                pending[r].extend(_slice_windows(buf[r], [round(s / sr * r) - base[r] for s in take], width[r]))
            first += len(take)
            if len(pending[sr]) == batch or (last and first == len(starts)):
                clips = {r: np.stack(pending[r]) for r in rates}
                proba.append(model.window_proba(clips, sr=sr, n_classes=len(names)))
                level.append(loudness_db(clips[sr]))
                loud, quiet = frame_levels_db(clips[sr], sr=sr)
                peaks.append(loud)
                floors.append(quiet)
                pending = {r: [] for r in rates}
        for r in rates:  # keep the samples from the next window's start on
            drop = min(len(buf[r]), max(0, round(k * hop / sr * r) - base[r]))
            buf[r], base[r] = buf[r][drop:], base[r] + drop
    start = np.asarray(starts, np.int64)
    p = np.concatenate(proba)
    out = pd.DataFrame({"file": file, "start_s": start / sr, "end_s": np.minimum(start + width[sr], n) / sr})
    for c, name in enumerate(names):
        out[name] = p[:, c]
    out["loudness_db"] = np.concatenate(level).astype(np.float64)
    out["peak_db"] = np.concatenate(peaks).astype(np.float64)  # its loudest 0.1-s frame
    out["floor_db"] = np.concatenate(floors).astype(np.float64)  # its quietest: the background it holds
    out["partial"] = np.asarray(cut_short, bool)
    return out, peak


def _slice_windows(y: np.ndarray, offsets: list[int], width: int) -> np.ndarray:
    """(n, width) float32 windows of y starting at the offsets (samples), zero-padded past its end."""
    out = np.zeros((len(offsets), width), np.float32)
    for i, a in enumerate(offsets):
        part = y[a : a + width]
        out[i, : len(part)] = part
    return out


def _file_pieces(path: str | os.PathLike, rates: list[int], *, chunk_s: float) -> Pieces:
    """The file chunk_s at a time: decoded mono at its own rate (quiet chunks allowed), then resampled to each rate
    by one soxr stream, whose output equals decode_region's whole-file resampling (same soxr quality)."""
    import soxr

    if not (math.isfinite(chunk_s) and chunk_s > 0):
        raise ValueError(f"chunk_s must be a positive number of seconds, got {chunk_s!r}")
    info = probe(path)
    native = info["sample_rate"]
    frames, step, lead = round(info["duration_s"] * native), max(1, round(chunk_s * native)), round(_LEAD_S * native)
    streams = {r: soxr.ResampleStream(native, r, 1, dtype="float32", quality="HQ") for r in rates if r != native}
    for first in range(0, max(frames, 1), step):
        last, read_from = first + step >= frames, max(0, first - lead)
        end_s = float("nan") if last else (first + step) / native
        y, _ = decode_region(path, sr=native, start_s=read_from / native, end_s=end_s, allow_silent=True)
        y = y[first - read_from :]
        yield (
            {
                r: streams[r].resample_chunk(y, last=last).astype(np.float32, copy=False) if r in streams else y
                for r in rates
            },
            last,
        )
