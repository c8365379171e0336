"""Read any audio file soundfile can open as float32 mono at a fixed rate and length, or say why not."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tasks.errors import AudioDecodeError

AUDIO_EXTENSIONS = (".wav", ".ogg", ".flac", ".mp3", ".aiff", ".aif")
# Peak below 1e-6 of full scale (-120 dBFS, under one 16-bit step of 3e-5) counts as
# digital silence: only files with no signal at all are rejected, quiet ones are kept.
SILENCE_PEAK = 1e-6
# Compressed formats (mp3) estimate their length; a clip decoding to under 99% of it is cut short.
_MIN_DECODED_FRACTION = 0.99


def fix_length(y: np.ndarray, *, n_samples: int) -> np.ndarray:
    """Trim or zero-pad the last axis of `y` to exactly n_samples."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    n = y.shape[-1]
    if n >= n_samples:
        return y[..., :n_samples]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n_samples - n)]
    return np.pad(y, pad)


def probe(path: str | os.PathLike) -> dict:
    """Header facts of one file: sample_rate, channels, duration_s, subtype."""
    path = Path(path)
    _check_nonempty(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for unreadable files
        raise AudioDecodeError(path, f"unreadable ({_short(exc)})") from exc
    return _info_dict(info.samplerate, info.channels, info.frames, info.subtype)


def load_audio(path: str | os.PathLike, *, sr: int, duration_s: float | None = 5.0) -> np.ndarray:
    """Decode a file to float32 mono at `sr` Hz, trimmed/zero-padded to duration_s (None keeps it all)."""
    y, _ = _decode(Path(path), sr=sr, duration_s=duration_s)
    return y


def load_checked(
    path: str | os.PathLike, *, sr: int, duration_s: float | None = 5.0
) -> tuple[np.ndarray | None, dict | None, str | None]:
    """Batch-friendly load_audio: (clip, probe info, None), or (None, None, reason) for a bad file."""
    try:
        y, info = _decode(Path(path), sr=sr, duration_s=duration_s)
    except AudioDecodeError as exc:
        return None, None, exc.reason
    return y, info, None


def decode_region(
    path: str | os.PathLike,
    *,
    sr: int,
    start_s: float = float("nan"),
    end_s: float = float("nan"),
    allow_silent: bool = False,
) -> tuple[np.ndarray, dict]:
    """A whole recording (or its [start_s, end_s) region; NaN = from the start / to the end) as float32 mono
    at sr Hz, validated, with its probe info; AudioDecodeError naming the file and the reason.

    allow_silent: a silent region is returned rather than refused (a quiet window of an accepted recording)."""
    return _decode(Path(path), sr=sr, duration_s=None, start_s=start_s, end_s=end_s, allow_silent=allow_silent)


def _decode(
    path: Path,
    *,
    sr: int,
    duration_s: float | None,
    start_s: float = float("nan"),
    end_s: float = float("nan"),
    allow_silent: bool = False,
) -> tuple[np.ndarray, dict]:
    """Read, validate, downmix, resample and fix the length of one file (or a region of it)."""
    if sr <= 0:
        raise ValueError(f"sr must be a positive number of Hz, got {sr}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be positive or None, got {duration_s}")
    _check_nonempty(path)
    # container checks first: a cut-off file can decode to a short, silent stream
    if path.suffix.lower() == ".wav" and (why := _wav_truncation(path)):
        raise AudioDecodeError(path, why)
    if path.suffix.lower() in (".ogg", ".oga", ".opus") and (why := _ogg_truncation(path)):
        raise AudioDecodeError(path, why)
    try:
        with sf.SoundFile(str(path)) as fh:
            info = _info_dict(fh.samplerate, fh.channels, fh.frames, fh.subtype)
            declared = fh.frames
            first = 0 if np.isnan(start_s) else min(declared, round(start_s * fh.samplerate))
            last = declared if np.isnan(end_s) else min(declared, round(end_s * fh.samplerate))
            if first:
                fh.seek(first)
            data = fh.read(frames=max(0, last - first), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioDecodeError(path, f"unreadable or corrupt ({_short(exc)})") from exc
    if data.shape[0] == 0:
        region = "" if np.isnan(start_s) and np.isnan(end_s) else f" in the region {start_s:g}-{end_s:g} s"
        raise AudioDecodeError(path, f"no audio frames{region} (empty stream)")
    if data.shape[0] < _MIN_DECODED_FRACTION * (last - first):
        raise AudioDecodeError(path, f"truncated: decoded {data.shape[0]} of {last - first} frames")
    if not np.isfinite(data).all():
        raise AudioDecodeError(path, "non-finite samples (NaN or Inf)")
    y = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if info["sample_rate"] != sr:
        y = soxr.resample(y, info["sample_rate"], sr, quality="HQ").astype(np.float32, copy=False)
    if duration_s is not None:
        y = fix_length(y, n_samples=round(sr * duration_s))
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak < SILENCE_PEAK and not allow_silent:
        window = "" if duration_s is None else f" in the first {duration_s:g} s"
        raise AudioDecodeError(path, f"all-silent{window} (peak {peak:.1e} < {SILENCE_PEAK:.0e})")
    return np.ascontiguousarray(y, dtype=np.float32), info


def _check_nonempty(path: Path) -> None:
    """Raise for a missing or zero-byte file before libsndfile gives a vaguer message."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot open ({exc.strerror or exc})") from exc
    if size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")


def _wav_truncation(path: Path) -> str | None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; compare the header with the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(12)[:4] != b"RIFF":
            return None  # RF64/W64 and friends: trust libsndfile
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                available = size - pos - 8
                # 0 and 0xFFFFFFFF mean "unknown length" (streamed writers)
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    return f"truncated: data chunk declares {chunk_size} bytes, file holds {available}"
                return None
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _ogg_truncation(path: Path) -> str | None:
    """Walk the Ogg pages: a stream cut short ends inside a page or without its end-of-stream page."""
    size = path.stat().st_size
    pos, last_flags = 0, None
    with open(path, "rb") as fh:
        while pos < size:
            fh.seek(pos)
            head = fh.read(27)
            if len(head) < 27 or head[:4] != b"OggS":
                return (
                    None if last_flags is None and pos == 0 else f"truncated: broken Ogg page at byte {pos} of {size}"
                )
            table = fh.read(head[26])
            end = pos + 27 + head[26] + sum(table)
            if len(table) < head[26] or end > size:
                return f"truncated: the Ogg stream is cut off inside a page (file ends at byte {size} of {end})"
            last_flags, pos = head[5], end
    if last_flags is not None and not last_flags & 0x04:
        return "truncated: the Ogg stream ends without its end-of-stream page"
    return None


def _info_dict(sample_rate: int, channels: int, frames: int, subtype: str) -> dict:
    """The probe() record."""
    duration = frames / sample_rate if sample_rate else 0.0
    return {
        "sample_rate": int(sample_rate),
        "channels": int(channels),
        "duration_s": float(duration),
        "subtype": str(subtype),
    }


def _short(exc: BaseException) -> str:
    """libsndfile's message without the repeated file name."""
    text = str(exc).strip() or type(exc).__name__
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    return text
