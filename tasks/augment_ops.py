"""The book's four augmentations as pure numpy: drawn from a seeded generator, then applied deterministically.

No Prefect import here, so augment_clips' worker processes start in well under a second.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.fft
import soxr
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.cache import save_npy


class AugmentParams(BaseModel):
    """The book's recipe: each copy applies each change with its probability (Kneusel ch. 12)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_copies: int = Field(19, ge=1, le=1000)
    p_shift: float = Field(0.5, ge=0, le=1)
    max_shift_s: float = Field(0.125, ge=0, le=5)  # book: +-sr/8 samples
    p_noise: float = Field(0.5, ge=0, le=1)
    noise_level: float = Field(0.1, ge=0, le=1)  # fraction of the clip's (max - min)
    noise: Literal["zero_mean", "book"] = "zero_mean"  # book: uniform in [0, level), shifts the DC level
    p_pitch: float = Field(0.5, ge=0, le=1)
    pitch_steps: tuple[float, float] = (-10.0, 10.0)  # semitones
    p_stretch: float = Field(0.5, ge=0, le=1)
    stretch_rate: tuple[float, float] = (0.5, 1.5)  # >1 is faster (shorter)

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentParams:
        lo, hi = self.pitch_steps
        if not -24 <= lo <= hi <= 24:
            raise ValueError(f"pitch_steps must be (lo, hi) with -24 <= lo <= hi <= 24, got {self.pitch_steps}")
        lo, hi = self.stretch_rate
        if not 0.1 <= lo <= hi <= 10:
            raise ValueError(f"stretch_rate must be (lo, hi) with 0.1 <= lo <= hi <= 10, got {self.stretch_rate}")
        return self


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
    return y + span * u


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
        out = soxr.resample(out, sr / p, sr, quality="HQ")
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
    """librosa.phase_vocoder on frames x bins, phases carried as unit phasors (no angle or trig, no float32 drift)."""
    n_frames, n_bins = spec.shape
    # A tiny real offset gives silent bins librosa's angle 0 (phasor 1) without a masked divide.
    phasor = np.ones((n_frames + 1, n_bins), np.complex64)  # the frame after the last is silence too
    np.add(spec, np.float32(1e-30), out=phasor[:n_frames])
    mag = np.abs(phasor[:n_frames])
    phasor[:n_frames] /= mag
    advance = phasor[1:] * phasor[:-1].conj()  # e^{i (phase[t+1] - phase[t])}
    steps = np.arange(0, n_frames, rate)
    i0 = steps.astype(np.intp)
    alpha = (steps - i0).astype(np.float32)[:, None]
    mag = np.concatenate([mag, np.zeros((1, n_bins), np.float32)])
    out = np.empty((len(steps), n_bins), np.complex64)
    out[0] = phasor[0]
    step_advance = advance[i0]
    for t in range(1, len(steps)):  # a row loop beats cumprod/cumsum along axis 0 here
        np.multiply(out[t - 1], step_advance[t - 1], out=out[t])
    out *= mag[i0] + alpha * (mag[i0 + 1] - mag[i0])
    return out


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of _stft (overlap-add with window-square normalisation), trimmed to `length`."""
    win = _hann(n_fft)
    frames = scipy.fft.irfft(spec, n=n_fft, axis=1)
    frames *= win
    n_frames, k = frames.shape[0], n_fft // hop
    out = np.zeros((n_frames + k - 1) * hop, np.float32)
    norm = np.zeros_like(out)
    parts = frames.reshape(n_frames, k, hop)
    win_sq = (win * win).reshape(k, hop)
    for j in range(k):
        out[j * hop: j * hop + n_frames * hop] += parts[:, j, :].reshape(-1)
        norm[j * hop: j * hop + n_frames * hop] += np.tile(win_sq[j], n_frames)
    np.divide(out, norm, out=out, where=norm > 1e-8)
    return _fix_length(out[n_fft // 2:], length)


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
    # Otherwise every new STFT-sized temporary page-faults afresh: measured ~2x slower per copy here.
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(-3, 1 << 28)  # M_MMAP_THRESHOLD: arrays up to 256 MB come from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of freed heap for reuse


def write_shards(clips: np.ndarray, indices: list[int], keys: list[int], shards: list[Path], sr: int,
                 params: AugmentParams, seed: int) -> list[int]:
    """Worker: augment a few clips and write each one's shard atomically."""
    for y, key, shard in zip(clips, keys, shards):
        save_npy(shard, augment_clip(np.asarray(y, np.float32), sr, params=params, seed=seed, clip_key=key))
    return list(indices)
