"""Exact and near-duplicate recordings: same content hash, or near-identical level-invariant audio fingerprints."""

from __future__ import annotations

from itertools import combinations

import librosa
import numpy as np
import pandas as pd
import scipy.fft

from tasks.errors import DatasetError

MANIFEST_COLUMNS = ("path", "recording_id", "label", "class_id", "fold", "group", "content_hash")
PAIR_COLUMNS = [
    "kind",
    "path_a",
    "path_b",
    "recording_a",
    "recording_b",
    "label_a",
    "label_b",
    "similarity",
    "fold_a",
    "fold_b",
    "group_a",
    "group_b",
    "crosses_fold",
    "crosses_group",
    "n_segments",
    "index_a",
    "index_b",
]
# Log floor 50 dB under the clip's loudest cell: it scales with the clip (so level cancels) and sits above
# the hiss a re-encoding or mild added noise brings, so such copies still match.
FLOOR_DB = 50.0
# A segment shorter than its window (manifest duration_s) was zero-padded: its sound is what lies between the
# first and the last TRIM_FRACTION of its energy. Quantiles of the energy, unlike an edge found by level, stay
# put under a copy's gain, codec noise, trim or shift.
TRIM_FRACTION = 0.01
# Padding under a sixteenth of the window (one time cell; 9 of ESC-10's 400 clips lack up to 40 ms) changes
# at most the last cell: such a segment is fingerprinted whole, as one that fills its window.
WHOLE_PADDING = 1 / 16
# Such a sound is fingerprinted over at least MIN_SPAN_S around it (cells of 22 ms or more: finer detail
# does not survive a lossy codec), in SOUND_FRAME_S frames, with mel bands up to SOUND_FMAX of the Nyquist
# frequency (lossy codecs and resamplers cut above) and a floor SOUND_FLOOR_DB under its loudest cell (they
# drop what is masked). Chosen on bench/audit.py's short clips; a sound under MIN_SOUND_S gets a zero vector.
MIN_SPAN_S = 0.35
SOUND_FRAME_S = 0.032
SOUND_FMAX = 0.85
SOUND_FLOOR_DB = 30.0
MIN_SOUND_S = 0.05
# Two segments can be copies only when their sounds last within 10% of each other: on bench/audit.py's short
# clips, copies' sounds differ by at most 5% (resampled; codecs 2.4%) and one distinct pair in ten is this close.
LENGTH_TOLERANCE = 0.1
DEFAULT_THRESHOLD = 0.7


def check_manifest(manifest: pd.DataFrame, n: int | None = None) -> pd.DataFrame:
    """The manifest with a 0..n-1 index and typed audit columns; DatasetError naming what is missing."""
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DatasetError(f"audit: manifest lacks columns {missing}; it needs {list(MANIFEST_COLUMNS)}")
    if n is not None and len(manifest) != n:
        raise DatasetError(f"audit: manifest has {len(manifest)} rows but {n} segments/vectors were given")
    m = manifest.reset_index(drop=True).copy()
    for col in ("path", "recording_id", "label", "group", "content_hash"):
        m[col] = m[col].fillna("").astype(str)
    m["fold"] = pd.array(m["fold"], dtype="Int64")
    m["class_id"] = m["class_id"].astype(int)
    return m


def sound_spans(clips: np.ndarray, sr: int, *, duration_s=None) -> np.ndarray:
    """(n, 2) start and stop sample of each segment's sound.

    A segment filling its window (duration_s missing, NaN or short of it by under WHOLE_PADDING) is all sound:
    (0, window), fingerprinted as a whole. A shorter one was zero-padded after duration_s: its sound runs from
    the first to the last TRIM_FRACTION of its energy within duration_s ((0, 0) when silent).
    """
    clips = np.atleast_2d(clips)
    n, window = clips.shape
    seconds = np.full(n, np.nan) if duration_s is None else np.asarray(duration_s, float).reshape(n)
    finite = np.isfinite(seconds)
    content = np.where(finite, np.round(np.where(finite, seconds, 0.0) * sr), window).clip(0, window).astype(int)
    spans = np.tile([0, window], (n, 1))
    for i in np.flatnonzero(content < (1 - WHOLE_PADDING) * window):
        energy = np.cumsum(np.square(clips[i, : content[i]], dtype=np.float64))
        total = energy[-1] if len(energy) else 0.0
        if total <= 0:
            spans[i] = 0
            continue
        lo = int(np.searchsorted(energy, TRIM_FRACTION * total, side="left"))
        hi = int(np.searchsorted(energy, (1 - TRIM_FRACTION) * total, side="left")) + 1
        spans[i] = lo, hi
    return spans


def fingerprints(
    clips: np.ndarray,
    sr: int,
    *,
    n_bands: int = 32,
    n_steps: int = 16,
    n_fft: int = 1024,
    chunk: int = 64,
    duration_s=None,
    spans: np.ndarray | None = None,
) -> np.ndarray:
    """(n, (n_bands - 1) * (n_steps - 1)) float32 unit vectors: a coarse, level-invariant log-mel signature of
    each segment's sound (sound_spans from duration_s, or `spans`), not of the window's zero padding.

    The log-mel power is averaged into n_bands x n_steps cells, then differenced along frequency and time
    (Haitsma & Kalker's fingerprint, kept real-valued): the clip's spectral tilt and loudness envelope cancel,
    so two takes of a similar sound differ while a copy at another level or with mild noise does not.
    A segment filling its window is framed from its first sample, n_fft long, half a frame apart; shifts must
    stay small beside a cell (segment / n_steps): on ESC-10's 5 s clips, copies shifted by 10, 20, 50 and
    100 ms reach the default threshold 100%, 99.5%, 88% and 28% of the time (bench/audit.py).
    A padded segment's sound is framed from its start (at least MIN_SPAN_S, 4 frames a cell), so a short word
    fills the cells wherever it sits in the window and a shifted or trimmed copy gives the same cells.
    A sound under MIN_SOUND_S or a constant signal (a digital steady tone) has no pattern and gets a zero
    vector: only its hash matches.
    """
    clips = np.atleast_2d(clips)
    spans = sound_spans(clips, sr, duration_s=duration_s) if spans is None else np.asarray(spans, int)
    out = np.zeros((len(clips), (n_bands - 1) * (n_steps - 1)), np.float32)
    whole = (spans[:, 0] == 0) & (spans[:, 1] == clips.shape[-1])
    rows = np.flatnonzero(whole)
    if len(rows):
        mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_bands).astype(np.float32).T
        window = np.hanning(n_fft).astype(np.float32)
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            power = _whole_power(np.asarray(clips[part], np.float32), n_fft, mel, window)
            out[part] = _pattern(power, n_steps, floor_db=FLOOR_DB)
    rows = np.flatnonzero(~whole & (spans[:, 1] - spans[:, 0] >= MIN_SOUND_S * sr))
    if len(rows):
        frame = int(2 ** round(np.log2(SOUND_FRAME_S * sr)))
        mel = librosa.filters.mel(sr=sr, n_fft=frame, n_mels=n_bands, fmax=SOUND_FMAX * sr / 2).astype(np.float32).T
        window = np.hanning(frame).astype(np.float32)
        for i in rows:
            sound = _around(clips[i], *spans[i], min_len=round(MIN_SPAN_S * sr))
            power = _sound_power(sound, frame, mel, window, n_steps=n_steps)
            out[i] = _pattern(power, n_steps, floor_db=SOUND_FLOOR_DB)[0]
    return out


def _around(y: np.ndarray, lo: int, hi: int, *, min_len: int) -> np.ndarray:
    """float32 y[lo:hi], widened evenly to min_len samples if shorter (zeros beyond y's ends)."""
    extra = max(min_len - (hi - lo), 0)
    lo, hi = lo - extra // 2, hi + extra - extra // 2
    out = np.zeros(hi - lo, np.float32)
    a, b = max(lo, 0), min(hi, len(y))
    out[a - lo : b - lo] = y[a:b]
    return out


def _whole_power(block: np.ndarray, n_fft: int, mel: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(c, frames, bands) mel power of whole segments, frames half a frame apart from the first sample."""
    if block.shape[-1] < n_fft:
        block = np.pad(block, ((0, 0), (0, n_fft - block.shape[-1])))
    hop = n_fft // 2
    n_frames = 1 + (block.shape[-1] - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(block, n_fft, axis=-1)[:, ::hop][:, :n_frames]
    return _mel_power(frames, mel, window)


def _sound_power(sound: np.ndarray, n_fft: int, mel: np.ndarray, window: np.ndarray, *, n_steps: int) -> np.ndarray:
    """(1, frames, bands) mel power of one sound, framed from its start at most half a frame apart and at
    least 4 frames a cell."""
    if len(sound) < n_fft:
        sound = np.pad(sound, (0, n_fft - len(sound)))
    span = len(sound) - n_fft
    hop = min(n_fft / 2, span / (4 * n_steps - 1)) if span else 1.0
    starts = np.round(np.arange(int(span / hop + 1e-6) + 1) * hop).astype(int)
    return _mel_power(sound[starts[:, None] + np.arange(n_fft)][None], mel, window)


def _mel_power(frames: np.ndarray, mel: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(c, frames, bands) mel power of (c, frames, n_fft) samples."""
    mag = np.abs(scipy.fft.rfft(frames * window, axis=-1, workers=-1))
    mag *= mag
    return (mag.reshape(-1, mag.shape[-1]) @ mel).reshape(*frames.shape[:2], mel.shape[1])


def _pattern(power: np.ndarray, n_steps: int, *, floor_db: float) -> np.ndarray:
    """(c, (bands - 1) * (n_steps - 1)) unit vectors: power averaged into n_steps equal time cells, floored
    floor_db under the loudest cell, in dB, differenced along frequency and time."""
    c, n_frames, _ = power.shape
    edges = np.linspace(0, n_frames, n_steps + 1).round().astype(int)
    lo = np.minimum(edges[:-1], n_frames - 1)
    hi = np.maximum(edges[1:], lo + 1)
    cum = np.concatenate([np.zeros_like(power[:, :1]), np.cumsum(power, axis=1)], axis=1)
    cells = (cum[:, hi] - cum[:, lo]) / (hi - lo)[None, :, None]  # (c, n_steps, n_bands)
    floor = cells.max(axis=(1, 2), keepdims=True) * 10 ** (-floor_db / 10) + 1e-30
    pattern = np.diff(np.diff(10 * np.log10(cells + floor), axis=2), axis=1)
    return _unit(pattern.reshape(c, -1))


def _unit(v: np.ndarray, *, tol: float = 1e-2) -> np.ndarray:
    """Rows scaled to unit norm; rows with norm under tol dB (a constant signal) become zero."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(norm > tol, v / np.maximum(norm, tol), 0.0).astype(np.float32)


def exact_duplicates(manifest: pd.DataFrame) -> pd.DataFrame:
    """Pairs of different recordings whose files have the same content hash (one row per recording pair)."""
    m = check_manifest(manifest)
    first = m[m["content_hash"] != ""].drop_duplicates("recording_id")
    ia, ib = [], []
    for _, rows in first.groupby("content_hash", sort=True):
        for a, b in combinations(rows.index.tolist(), 2):
            ia.append(a)
            ib.append(b)
    return pair_frame(m, np.array(ia, int), np.array(ib, int), np.ones(len(ia)), kind="exact")


def near_duplicates(
    fp: np.ndarray,
    manifest: pd.DataFrame,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    sound_s: np.ndarray | None = None,
    chunk: int = 1024,
) -> pd.DataFrame:
    """Segment pairs of different recordings whose fingerprints' cosine is >= threshold and, when sound_s (each
    segment's sound length, from sound_spans) is given, whose sounds last within LENGTH_TOLERANCE of each other.

    Blocked matrix products over the upper triangle: O(n^2 d) flops in BLAS, memory O(chunk * n).
    """
    fp = np.asarray(fp, np.float32)
    m = check_manifest(manifest, len(fp))
    rec = pd.factorize(m["recording_id"])[0]
    ia, ib, sim = [np.array([], int)], [np.array([], int)], [np.array([], np.float32)]
    for start in range(0, len(fp), chunk):
        stop = min(start + chunk, len(fp))
        block = fp[start:stop] @ fp[start:].T
        i, j = np.nonzero(block >= threshold)
        a, b = i + start, j + start
        keep = (b > a) & (rec[a] != rec[b])
        if sound_s is not None:
            la, lb = np.asarray(sound_s, float)[a], np.asarray(sound_s, float)[b]
            keep &= np.abs(la - lb) <= LENGTH_TOLERANCE * np.maximum(la, lb)
        ia.append(a[keep])
        ib.append(b[keep])
        sim.append(block[i[keep], j[keep]])
    similarity = np.minimum(np.concatenate(sim).astype(float), 1.0)
    return pair_frame(m, np.concatenate(ia), np.concatenate(ib), similarity, kind="near")


def near_rule(threshold: float = DEFAULT_THRESHOLD) -> str:
    """What a near pair is and how the default rule was checked, for the audit's report."""
    return (
        f"fingerprint cosine ≥ {threshold:g} over each segment's sound, its window's zero padding left out, "
        f"and sounds within {LENGTH_TOLERANCE:.0%} in length; the default {DEFAULT_THRESHOLD:g} was checked in "
        "bench/audit.py: no false pair among 3,000 distinct word-like 0.1-2.3 s clips padded to 5 s, all their "
        "re-encoded, gain-changed, trimmed, shifted and resampled copies found, and ESC-10 copies shifted by "
        "10/20/50/100 ms found 100/99.5/88/28% of the time"
    )


def pair_frame(m: pd.DataFrame, ia: np.ndarray, ib: np.ndarray, similarity: np.ndarray, *, kind: str) -> pd.DataFrame:
    """The PAIR_COLUMNS table for manifest rows ia[k], ib[k]."""
    a, b = m.iloc[ia].reset_index(drop=True), m.iloc[ib].reset_index(drop=True)
    out = pd.DataFrame(
        {
            "kind": kind,
            "path_a": a["path"],
            "path_b": b["path"],
            "recording_a": a["recording_id"],
            "recording_b": b["recording_id"],
            "label_a": a["label"],
            "label_b": b["label"],
            "similarity": np.round(np.asarray(similarity, float), 4),
            "fold_a": a["fold"],
            "fold_b": b["fold"],
            "group_a": a["group"],
            "group_b": b["group"],
            "crosses_fold": pd.array(a["fold"] != b["fold"], dtype="boolean"),
            "crosses_group": a["group"] != b["group"],
            "n_segments": 1,
            "index_a": np.asarray(ia, int),
            "index_b": np.asarray(ib, int),
        },
        columns=PAIR_COLUMNS,
    )
    return out.sort_values(["similarity", "index_a", "index_b"], ascending=[False, True, True], ignore_index=True)


def per_recording(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, recording pair): the most similar segment pair, n_segments counting all of them."""
    if pairs.empty:
        return pairs
    p = pairs.copy()
    swap = p["recording_a"] > p["recording_b"]
    for left, right in (
        ("path_a", "path_b"),
        ("recording_a", "recording_b"),
        ("label_a", "label_b"),
        ("fold_a", "fold_b"),
        ("group_a", "group_b"),
        ("index_a", "index_b"),
    ):
        la, ra = p[left].copy(), p[right].copy()
        p[left], p[right] = la.where(~swap, ra), ra.where(~swap, la)
    p = p.sort_values("similarity", ascending=False, kind="stable")
    counts = p.groupby(["kind", "recording_a", "recording_b"], sort=False)["n_segments"].transform("sum")
    p["n_segments"] = counts
    return p.drop_duplicates(["kind", "recording_a", "recording_b"]).sort_values(
        ["kind", "similarity", "recording_a", "recording_b"], ascending=[True, False, True, True], ignore_index=True
    )[PAIR_COLUMNS]
