"""The book's four augmentations as pure numpy: drawn from a seeded generator, then applied deterministically.

No Prefect import here, so augment_clips' worker processes start in well under a second.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np
import scipy.fft
import soxr

from tasks.records import AugmentParams


def copy_seed(run_seed: int, clip_key: int, copy_index: int) -> np.random.SeedSequence:
    """Seed of copy `copy_index` of one clip: depends only on these three, not on order or worker split."""
    if min(run_seed, clip_key, copy_index) < 0:
        raise ValueError(f"seeds and keys must be >= 0, got {(run_seed, clip_key, copy_index)}")
    return np.random.SeedSequence([int(run_seed), int(clip_key), int(copy_index)])


def draw(rng: np.random.Generator, params: AugmentParams) -> dict:
    """Draw one copy's changes; an unapplied change gets its identity value (0 s, 0 level, 0 steps, rate 1)."""
    # Always draw every value in the same order, so each decision uses fixed stream positions.
    u = rng.random(4)
    shift_s = rng.uniform(-params.max_shift_s, params.max_shift_s)
    noise_seed = int(rng.integers(2**63))
    steps = rng.uniform(*params.pitch_steps)
    rate = rng.uniform(*params.stretch_rate)
    return {
        "shift_s": float(shift_s) if u[0] < params.p_shift else 0.0,
        "noise_level": params.noise_level if u[1] < params.p_noise else 0.0,
        "noise": params.noise,
        "noise_seed": noise_seed,
        "pitch_steps": float(steps) if u[2] < params.p_pitch else 0.0,
        "stretch_rate": float(rate) if u[3] < params.p_stretch else 1.0,
    }


def apply(y: np.ndarray, sr: int, drawn: dict) -> np.ndarray:
    """Shift, add noise, pitch-shift and stretch (book order), keep the length, clip to [-1, 1]; float32."""
    y = np.asarray(y, dtype=np.float32)
    n = y.shape[-1]
    out = shift(y, sr, shift_s=drawn["shift_s"])
    if drawn["noise_level"] > 0:
        out = add_noise(out, sr, level=drawn["noise_level"], kind=drawn["noise"], seed=drawn["noise_seed"])
    if drawn["pitch_steps"] != 0 or drawn["stretch_rate"] != 1:
        out = stretch_and_shift_pitch(out, sr, rate=drawn["stretch_rate"], n_steps=drawn["pitch_steps"])
    out = _fix_length(out, n)
    return np.clip(out, -1.0, 1.0, out=out)


def shift(y: np.ndarray, sr: int, *, shift_s: float) -> np.ndarray:
    """Move the clip by shift_s (positive: later), filling the vacated part with zeros (no wrap-around)."""
    n = y.shape[-1]
    k = max(-n, min(n, int(round(shift_s * sr))))
    out = np.zeros_like(y)
    if k >= 0:
        out[k:] = y[: n - k]
    else:
        out[:k] = y[-k:]
    return out


def add_noise(y: np.ndarray, sr: int, *, level: float, kind: str, seed: int) -> np.ndarray:
    """Add uniform noise of width level * (max - min); "book" is non-negative, "zero_mean" is centred."""
    span = np.float32(level * (float(y.max()) - float(y.min()))) if y.size else np.float32(0)
    u = np.random.default_rng(seed).random(y.shape[-1], dtype=np.float32)
    if kind == "zero_mean":
        u -= np.float32(0.5)
    elif kind != "book":
        raise ValueError(f"noise kind must be 'zero_mean' or 'book', got {kind!r}")
    u *= span
    u += y
    return u


def stretch_and_shift_pitch(y: np.ndarray, sr: int, *, rate: float = 1.0, n_steps: float = 0.0) -> np.ndarray:
    """librosa's time_stretch(pitch_shift(y)) in ONE phase-vocoder pass and one resample; length ~ len/rate."""
    # pitch_shift = stretch by p then resample by p; stretching afterwards by `rate` equals stretching by p * rate
    # first, so one vocoder at p * rate and one resample from sr/p to sr do both.
    p = 2.0 ** (-float(n_steps) / 12.0)
    n_fft = _n_fft(sr)
    hop = n_fft // 4
    out = _phase_vocoder(_stft(y, n_fft, hop), rate * p)
    out = _istft(out, n_fft, hop, int(round(y.shape[-1] / (rate * p))))
    if n_steps != 0:
        out = soxr.resample(out, sr / p, sr, quality="MQ")  # 16-bit precision, as the book's .wav files
    return out


def _n_fft(sr: int) -> int:
    """librosa's 2048-sample window at 44.1 kHz, kept at the same duration (~46 ms) at other rates."""
    return int(2 ** round(np.log2(2048 * sr / 44100)))


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _stft(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred (zero-padded) STFT, frames x bins, complex64."""
    padded = np.pad(y, n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return scipy.fft.rfft(frames * _hann(n_fft), axis=1)


def _phase_vocoder(spec: np.ndarray, rate: float) -> np.ndarray:
    """librosa.phase_vocoder on frames x bins (overwrites spec), phases carried as unit phasors: no trig, no drift."""
    # Few, reused buffers on purpose: each fresh MB-sized temporary costs page faults (see keep_freed_memory).
    n_frames, n_bins = spec.shape
    spec += np.float32(1e-30)  # a silent bin gets librosa's angle 0 (phasor 1) without a masked divide
    mag = np.empty((n_frames + 1, n_bins), np.float32)
    np.abs(spec, out=mag[:n_frames])
    mag[n_frames] = 0  # the frame after the last is silence
    spec /= mag[:n_frames]  # now unit phasors e^{i phase[t]}
    advance = np.conjugate(spec)
    advance[:-1] *= spec[1:]  # e^{i (phase[t+1] - phase[t])}; the last frame advances to angle 0
    steps = np.arange(0, n_frames, rate)
    i0 = steps.astype(np.intp)
    out = np.empty((len(steps), n_bins), np.complex64)
    out[0] = spec[0]
    for t, i in enumerate(i0[:-1].tolist(), start=1):  # a row loop beats cumprod along axis 0 here
        np.multiply(out[t - 1], advance[i], out=out[t])
    level = mag[i0]  # magnitude interpolated linearly between frames i0 and i0 + 1
    step = mag[i0 + 1]
    step -= level
    step *= (steps - i0).astype(np.float32)[:, None]
    level += step
    out *= level
    return out


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of _stft (overlap-add with window-square normalisation), trimmed or zero-padded to `length`."""
    frames = scipy.fft.irfft(spec, n=n_fft, axis=1)
    frames *= _hann(n_fft)
    n_frames, k = frames.shape[0], n_fft // hop
    parts = frames.reshape(n_frames, k, hop)
    out = np.zeros((n_frames + k - 1, hop), np.float32)  # hop-sized blocks; frame f covers blocks f..f+k-1
    for j in range(k):
        out[j : j + n_frames] += parts[:, j]
    if n_frames >= k:
        head, full, tail = _window_square_sums(n_fft, hop)
        out[: k - 1] /= head
        out[k - 1 : n_frames] /= full
        out[n_frames:] /= tail
    else:  # shorter than one window: sum the window squares block by block
        norm = np.zeros_like(out)
        win_sq = (_hann(n_fft) ** 2).reshape(k, hop)
        for j in range(k):
            norm[j : j + n_frames] += win_sq[j]
        out /= np.where(norm > 1e-8, norm, 1)
    return _fix_length(out.reshape(-1)[n_fft // 2 :], length)


@functools.lru_cache(maxsize=8)
def _window_square_sums(n_fft: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlap-added squared window per hop block: first k-1 blocks, the steady state, last k-1 blocks."""
    k = n_fft // hop
    win_sq = (_hann(n_fft) ** 2).reshape(k, hop)
    head = np.cumsum(win_sq, axis=0)[:-1]
    tail = np.cumsum(win_sq[::-1], axis=0)[:-1][::-1]
    keep = lambda a: np.where(a > 1e-8, a, 1).astype(np.float32)  # noqa: E731 (librosa leaves ~0 sums alone)
    return keep(head), keep(win_sq.sum(axis=0)), keep(tail)


def _fix_length(y: np.ndarray, n: int) -> np.ndarray:
    if y.shape[-1] >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - y.shape[-1], y.dtype)])


def augment_clip(y: np.ndarray, sr: int, *, params: AugmentParams, seed: int, clip_key: int) -> np.ndarray:
    """All n_copies augmented copies of one clip, (n_copies, L) float32."""
    out = np.empty((params.n_copies, y.shape[-1]), np.float32)
    for j in range(params.n_copies):
        out[j] = apply(y, sr, draw(np.random.default_rng(copy_seed(seed, clip_key, j)), params))
    return out


def keep_freed_memory() -> None:
    """Worker set-up: stop glibc handing each freed MB-sized array back to the OS."""
    # Otherwise every new STFT-sized temporary page-faults afresh: ~1.3x the CPU per copy, measured here.
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(-3, 1 << 28)  # M_MMAP_THRESHOLD: arrays up to 256 MB come from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of freed heap for reuse


def write_rows(
    clips: np.ndarray,
    indices: list[int],
    keys: list[int],
    partial: Path,
    markers: list[Path],
    sr: int,
    params: AugmentParams,
    seed: int,
) -> list[int]:
    """Worker: augment a few clips into their rows of the partial .npy, then mark each row done."""
    with open(partial, "r+b") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(fh)
        offset = fh.tell()
        for y, i, key, marker in zip(clips, indices, keys, markers):
            rows = augment_clip(np.asarray(y, np.float32), sr, params=params, seed=seed, clip_key=key)
            if rows.shape != tuple(shape[1:]):
                raise ValueError(f"{partial}: rows of shape {shape[1:]}, got {rows.shape}")
            os.pwrite(fh.fileno(), rows.tobytes(), offset + i * rows.nbytes)  # plain writes: no page faults
            marker.touch()  # only after its row is written
    return list(indices)
