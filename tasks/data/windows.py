"""Cut recordings into fixed-length windows, weigh them by loudness, and pool window results per recording.

One rule serves ingestion (training segments) and the served model (prediction), so both see the same windows."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Windows more than this far below the loudest window of their recording are near-silence: they do not vote.
QUIET_DB = 30.0


def window_starts(n_samples: int, *, window: int, hop: int) -> list[int]:
    """Start samples: one window for a recording up to window + hop/2 long (trimmed or zero-padded), else
    one every hop plus one ending at the recording's end."""
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1 sample, got {window} and {hop}")
    if n_samples <= window + hop // 2:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def cut(y: np.ndarray, *, window: int, hop: int) -> tuple[np.ndarray, list[int]]:
    """((n_windows, window) float32, start samples) of a mono signal."""
    starts = window_starts(len(y), window=window, hop=hop)
    out = np.zeros((len(starts), window), np.float32)
    for i, s in enumerate(starts):
        part = y[s : s + window]
        out[i, : len(part)] = part
    return out, starts


def loudness_db(windows: np.ndarray) -> np.ndarray:
    """RMS level of each window in dB full scale (silence: -200)."""
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=-1))
    return (20 * np.log10(np.maximum(rms, 1e-10))).astype(np.float32)


def frame_levels_db(windows: np.ndarray, *, sr: int, frame_s: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(loudest, quietest) frame_s-long frame of each window in dB full scale: how far a window's sound rises above
    the background it also holds. Zero padding (a recording's last, partial window) is not a frame."""
    n, width = windows.shape
    frame = max(1, round(sr * frame_s))
    k = max(1, width // frame)
    frames = windows[:, : k * frame].reshape(n, k, -1) if width >= frame else windows[:, None, :]
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=-1))
    db = np.where(rms > 0, 20 * np.log10(np.maximum(rms, 1e-10)), np.nan)
    empty = np.isnan(db).all(axis=1)
    db[empty] = -200.0
    return np.nanmax(db, axis=1).astype(np.float32), np.nanmin(db, axis=1).astype(np.float32)


def _codes(owner) -> tuple[np.ndarray, np.ndarray]:
    """(owner keys in first-seen order, each row's index into them)."""
    codes, keys = pd.factorize(pd.Series(np.asarray(owner)), sort=False)
    return np.asarray(keys), codes


def vote_weights(level_db: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """1 for windows within QUIET_DB of their recording's loudest window, else 0 (each recording keeps one)."""
    level_db = np.asarray(level_db, float)
    keys, codes = _codes(owner)
    loudest = np.full(len(keys), -np.inf)
    np.maximum.at(loudest, codes, level_db)
    return (level_db >= loudest[codes] - QUIET_DB).astype(np.float64)


def pool(proba: np.ndarray, owner: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(owners in first-seen order, their weighted mean window probabilities)."""
    keys, codes = _codes(owner)
    w = np.ones(len(codes)) if weights is None else np.asarray(weights, float)
    total = np.bincount(codes, weights=w, minlength=len(keys))
    w = np.where(total[codes] > 0, w, 1.0)  # a recording with no vote left: plain mean
    total = np.bincount(codes, weights=w, minlength=len(keys))
    out = np.zeros((len(keys), proba.shape[1]))
    np.add.at(out, codes, proba * w[:, None])
    return keys, out / total[:, None]


# `--window-s auto`: the window follows the recordings' lengths, so short clips are not mostly padding.
AUTO_QUANTILE = 0.95
AUTO_CAP_S = 5.0
AUTO_FLOOR_S = 0.5


def auto_window_s(
    durations_s, *, quantile: float = AUTO_QUANTILE, cap_s: float = AUTO_CAP_S, floor_s: float = AUTO_FLOOR_S
) -> tuple[float, str]:
    """(window in seconds, the reason in words): the `quantile` of the recordings' durations rounded up to 0.1 s,
    capped at cap_s (longer recordings are cut into windows) and at least floor_s."""
    d = np.asarray([x for x in durations_s if np.isfinite(x) and x > 0], float)
    if not len(d):
        return cap_s, f"no recording durations known: {cap_s:g} s"
    q = float(np.quantile(d, quantile))
    window = float(min(cap_s, max(floor_s, np.ceil(q * 10 - 1e-3) / 10)))
    why = f"{100 * quantile:g}th percentile of {len(d)} recordings' durations is {q:.2f} s"
    if q > cap_s:
        why += f", capped at {cap_s:g} s (longer recordings are cut into windows)"
    elif window > q + 0.1:
        why += f", raised to the {floor_s:g}-s floor"
    return window, why
