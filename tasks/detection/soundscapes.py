"""Synthetic soundscapes as URBAN-SED was built with scaper (Salamon et al. 2017): labelled event clips mixed at
random onsets and SNRs over Brownian noise, with the events table that says where each one is.

Pure functions: every random choice is drawn from the caller's seeded np.random.Generator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.signal import lfilter

# Background level: -40 dBFS RMS leaves a 30-dB event (URBAN-SED's loudest SNR) at about -10 dBFS, below clipping.
BACKGROUND_RMS = 0.01
# Pole of the leaky integrator: 1/f^2 (Brownian) above about sr/1250 Hz, flat below, so the noise does not drift.
LEAK = 0.995
# Frames quieter than this below a clip's loudest frame are silence: trimmed from events, not counted in their level.
TOP_DB = 40.0
FRAME_S = 0.02


def brownian_noise(n_samples: int, *, rng: np.random.Generator) -> np.ndarray:
    """Float32 Brownian noise of unit RMS: leakily integrated white noise, started in its steady state, mean removed."""
    if n_samples == 0:
        return np.zeros(0, np.float32)
    burn_in = int(10 / (1 - LEAK))  # the integrator forgets its zero start after a few time constants
    y = lfilter([1.0], [1.0, -LEAK], rng.standard_normal(n_samples + burn_in))[burn_in:]
    y -= y.mean()
    return (y / np.sqrt(np.mean(np.square(y)))).astype(np.float32)


def background_only(duration_s: float, *, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Float32 Brownian noise of duration_s at BACKGROUND_RMS: a soundscape with no events."""
    return brownian_noise(int(round(duration_s * sr)), rng=rng) * np.float32(BACKGROUND_RMS)


def _frame_len(sr: int) -> int:
    """Samples in one FRAME_S level frame."""
    return max(1, int(FRAME_S * sr))


def _frame_db(y: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """(RMS level in dB of consecutive FRAME_S frames, the frame length in samples); a short tail is its own frame."""
    frame = _frame_len(sr)
    pad = np.zeros(-len(y) % frame, np.float64)
    frames = np.concatenate([y.astype(np.float64), pad]).reshape(-1, frame)
    counts = np.full(len(frames), frame)
    counts[-1] = frame - len(pad)
    rms = np.sqrt(np.square(frames).sum(1) / counts)
    return 20 * np.log10(np.maximum(rms, 1e-10)), frame


def _active(y: np.ndarray, sr: int) -> tuple[int, int, int]:
    """(first, last + 1 sample of the frames within TOP_DB of the loudest, start of the loudest frame)."""
    db, frame = _frame_db(y, sr)
    loud = np.flatnonzero(db >= db.max() - TOP_DB)
    return int(loud[0]) * frame, min(len(y), int(loud[-1] + 1) * frame), int(np.argmax(db)) * frame


def _active_rms(y: np.ndarray, *, sr: int) -> float:
    """RMS over the frames within TOP_DB of the loudest: an event's level, not diluted by its pauses."""
    db, frame = _frame_db(y, sr)
    keep = np.repeat(db >= db.max() - TOP_DB, frame)[: len(y)]
    return float(np.sqrt(np.mean(np.square(y[keep], dtype=np.float64))))


def _excerpt(clip: np.ndarray, *, sr: int, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """At most duration_s of the clip's sounding part, at a random place that holds its loudest frame, edges trimmed."""
    first, end, peak = _active(clip, sr)
    n = min(max(1, int(round(duration_s * sr))), end - first)
    lo, hi = max(first, min(peak + _frame_len(sr), end) - n), min(peak, end - n)
    start = int(rng.integers(lo, hi + 1)) if hi >= lo else min(peak, end - n)  # n shorter than a frame
    part = clip[start : start + n]
    first, end, _ = _active(part, sr)
    return part[first:end]


def make_soundscape(
    events_pool: Sequence[tuple[np.ndarray, str]],
    *,
    sr: int,
    duration_s: float,
    n_events: tuple[int, int] = (1, 9),
    event_duration_s: tuple[float, float] = (0.5, 4.0),
    snr_db: tuple[float, float] = (6, 30),
    rng: np.random.Generator,
    background: np.ndarray | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """(float32 mixture, events table onset/offset/label/snr_db sorted by onset) of URBAN-SED-like random events.

    n_events is an inclusive range; each event is an excerpt of a pool clip placed at a uniform onset (overlaps
    allowed) at an SNR over the background's RMS. If the mixture peaks above 1 it is scaled down as a whole, which
    keeps every SNR. The background defaults to background_only()."""
    n = int(round(duration_s * sr))
    bg = background_only(duration_s, sr=sr, rng=rng) if background is None else np.asarray(background, np.float32)
    if len(bg) != n:
        raise ValueError(f"background has {len(bg)} samples, but {duration_s} s at {sr} Hz needs {n}")
    bg_rms = float(np.sqrt(np.mean(np.square(bg, dtype=np.float64))))
    count = int(rng.integers(n_events[0], n_events[1] + 1))
    if count and (not events_pool or bg_rms == 0):
        raise ValueError("events need a non-empty events_pool and a background that is not silent (SNR reference)")
    mix, rows = bg.astype(np.float64), []
    for _ in range(count):
        clip, label = events_pool[int(rng.integers(len(events_pool)))]
        if not np.any(clip):
            raise ValueError(f"a pool clip labelled {label!r} is empty or silent; drop it from events_pool")
        want_s = min(rng.uniform(*event_duration_s), duration_s)
        snr = float(rng.uniform(*snr_db))
        event = _excerpt(np.asarray(clip, np.float32), sr=sr, duration_s=want_s, rng=rng)
        level = _active_rms(event, sr=sr)  # > 0: the excerpt holds the clip's loudest frame
        start = int(rng.integers(0, n - len(event) + 1))
        mix[start : start + len(event)] += event * (bg_rms * 10 ** (snr / 20) / level)
        rows.append({"onset": start / sr, "offset": (start + len(event)) / sr, "label": str(label), "snr_db": snr})
    peak = float(np.max(np.abs(mix))) if n else 0.0
    if peak > 1:
        mix /= peak
    table = pd.DataFrame(rows, columns=["onset", "offset", "label", "snr_db"])
    table = table.astype({"onset": float, "offset": float, "label": str, "snr_db": float})
    return mix.astype(np.float32), table.sort_values("onset", kind="stable").reset_index(drop=True)
