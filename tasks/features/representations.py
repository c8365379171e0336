"""Representations of clips (raw vector, engineered summary, log-mel, PCEN, MFCC, the book's spectrogram image,
pretrained BirdNET embeddings), cached."""

from __future__ import annotations

import functools
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import librosa
import numpy as np
import pandas as pd
import scipy.fft
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from prefect import task
from prefect.cache_policies import NO_CACHE
from threadpoolctl import threadpool_limits

from tasks.cache import atomic_path, digest, drop_pages, file_key
from tasks.data.audio import decode_region, fix_length
from tasks.data.manifest import read_manifest
from tasks.errors import SoundflowError
from tasks.features import pretrained
from tasks.logs import run_logger

# Bump when a representation changes, so old cached feature files are not reused.
_CACHE_VERSION = 1
# representations changed since: engineered 2 (+ band statistics, modulation), raw 2 (short windows spread)
_VERSIONS = {"engineered": 2, "raw": 2, "birdnet": pretrained.VERSION}
_CHUNK = 16  # clips per unit of parallel work


def raw_vector(y: np.ndarray, sr: int) -> np.ndarray:
    """The book's raw input: 882 samples evenly spaced over the first 2 s (one every 1/441 s), scaled (x + 1) / 2
    like int16; a window shorter than 2 s is spread over its own length instead, so no value is padding."""
    y = np.asarray(y, np.float32)
    span = min(2 * sr, y.shape[-1]) if y.shape[-1] else 2 * sr
    idx = np.round(np.arange(882) * (span / 882)).astype(np.intp)
    out = np.full(882, 0.5, np.float32)  # (0 + 1) / 2: silence past the end of an empty clip
    ok = idx < y.shape[-1]
    out[ok] = (y[idx[ok]] + 1) / 2
    return out


def engineered_vector(y: np.ndarray, sr: int) -> np.ndarray:
    """Summary vector for classical models and MLPs (1,210 values): Piczak-style frame-feature statistics (186),
    log-mel band statistics (640) and a modulation spectrum (384).

    The last two describe sound textures (rain, waves, engines) by their long-term statistics (their gain:
    bench/engineered.py). Scales differ (Hz vs ratios vs dB): standardize before distance- or margin-based models.
    """
    y = np.asarray(y, np.float32)
    mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=mag**2, sr=sr, n_mels=128))
    mfccs = librosa.feature.mfcc(S=mel_db, n_mfcc=40)
    # Rows: MFCC 40, delta 40, centroid, bandwidth, rolloff (Hz), flatness, contrast 7, zero-crossing rate, RMS.
    rows = np.vstack(
        [
            mfccs,
            delta(mfccs),
            librosa.feature.spectral_centroid(S=mag, sr=sr),
            librosa.feature.spectral_bandwidth(S=mag, sr=sr),
            librosa.feature.spectral_rolloff(S=mag, sr=sr),
            librosa.feature.spectral_flatness(S=mag),
            spectral_contrast(mag, sr),
            librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512),
            librosa.feature.rms(S=mag, frame_length=2048),
        ]
    )
    return np.concatenate(
        [rows.mean(axis=1), rows.std(axis=1), band_statistics(mel_db), modulation_spectrum(y, sr)]
    ).astype(np.float32)


def spectral_contrast(mag: np.ndarray, sr: int, *, n_bands: int = 6, fmin_hz: float = 200.0) -> np.ndarray:
    """librosa's spectral contrast, (n_bands + 1) rows: at low sample rates the octave bands above Nyquist are
    left out and their rows are zeros (8 kHz: 5 of 6 bands), so the vector keeps its length."""
    fit = int(np.ceil(np.log2(sr / 2 / fmin_hz)))  # librosa needs each band's lower edge fmin * 2**(b-1) below Nyquist
    used = max(1, min(n_bands, fit))
    rows = librosa.feature.spectral_contrast(S=mag, sr=sr, n_bands=used, fmin=fmin_hz)
    return np.vstack([rows[:-1], np.zeros((n_bands - used, rows.shape[1]), rows.dtype), rows[-1:]])


def band_statistics(mel_db: np.ndarray) -> np.ndarray:
    """Per mel band over time: mean, std, 10th and 90th percentiles, mean absolute delta (5 x n_mels values)."""
    lo, hi = np.percentile(mel_db, [10, 90], axis=1)
    change = np.abs(delta(mel_db)).mean(axis=1)
    return np.concatenate([mel_db.mean(axis=1), mel_db.std(axis=1), lo, hi, change])


def modulation_spectrum(
    y: np.ndarray, sr: int, *, n_mels: int = 32, n_bins: int = 12, fmin_hz: float = 0.5, fmax_hz: float = 40.0
) -> np.ndarray:
    """How fast each mel band's loudness fluctuates: log magnitude of the FFT of each band's log-energy
    envelope, averaged in `n_bins` log-spaced bands from 0.5 to 40 Hz (n_mels x n_bins values).

    Envelopes are sampled at ~86 frames/s (hop 256 at 22,050 Hz), enough for rotor beats and ticking clocks.
    """
    hop = max(1, int(round(sr / 86.13)))
    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, np.float32), sr=sr, n_fft=4 * hop, hop_length=hop, n_mels=n_mels
    )
    env = np.log(mel + 1e-8)
    env -= env.mean(axis=1, keepdims=True)
    spec = np.abs(np.fft.rfft(env * np.hanning(env.shape[1]), axis=1))
    freqs = np.fft.rfftfreq(env.shape[1], d=hop / sr)
    edges = np.searchsorted(freqs, np.geomspace(fmin_hz, fmax_hz, n_bins + 1))
    edges = np.minimum(edges, len(freqs) - 1)
    out = np.stack([spec[:, a : max(b, a + 1)].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    return np.log(out + 1e-6).ravel()


def logmel(
    y: np.ndarray,
    sr: int,
    *,
    n_mels: int = 64,
    n_fft: int = 2048,
    hop_length: int = 1024,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Log-mel power spectrogram in dB re 1.0 (floor 80 dB under the clip's peak), (n_mels, frames) float32.

    Defaults: 93 ms windows every 46 ms at 22,050 Hz (108 frames for 5 s). Halving the hop doubles the
    CNN's cost for no measured gain (bench/train.py --hop).
    """
    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, np.float32), sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0).astype(np.float32)


def logmel_deltas(
    y: np.ndarray,
    sr: int,
    *,
    n_mels: int = 64,
    n_fft: int = 2048,
    hop_length: int = 1024,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Log-mel, its delta and delta-delta as three channels, (n_mels, frames, 3) float32."""
    lm = logmel(y, sr, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length, fmin=fmin, fmax=fmax)
    return np.stack([lm, delta(lm), delta(lm, order=2)], axis=-1).astype(np.float32)


def delta(x: np.ndarray, *, order: int = 1) -> np.ndarray:
    """librosa's delta over time (last axis), 9 frames wide, narrower for short windows (it needs an odd width no
    wider than the frames); zeros under 3 frames."""
    n = x.shape[-1]
    width = min(9, n if n % 2 else n - 1)
    if width < 3:
        return np.zeros_like(x)
    return librosa.feature.delta(x, width=width, order=order)


def pcen(
    y: np.ndarray, sr: int, *, n_mels: int = 64, n_fft: int = 2048, hop_length: int = 1024, time_constant: float = 0.4
) -> np.ndarray:
    """Per-channel energy normalized mel spectrogram, (n_mels, frames) float32 (Wang et al. 2017, librosa.pcen).

    Each band is divided by its own smoothed loudness of the last `time_constant` seconds: steady backgrounds
    (rain, wind, engine hum) fade and onsets stand out, where the log-mel keeps absolute levels. A CNN on it
    errs on other clips than one on log-mels, which is what an ensemble needs.
    """
    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, np.float32), sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=1.0
    )
    # librosa's scaling for float audio in [-1, 1] (the filter was tuned on 32-bit integer magnitudes)
    return librosa.pcen(mel * 2.0**31, sr=sr, hop_length=hop_length, time_constant=time_constant).astype(np.float32)


def mfcc(
    y: np.ndarray, sr: int, *, n_mfcc: int = 40, n_mels: int = 128, n_fft: int = 2048, hop_length: int = 512
) -> np.ndarray:
    """MFCCs, (n_mfcc, frames) float32."""
    return librosa.feature.mfcc(
        y=np.asarray(y, np.float32), sr=sr, n_mfcc=n_mfcc, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length
    ).astype(np.float32)


def book_image(y: np.ndarray, sr: int, *, height: int = 100, width: int = 160, top_db: float = 120.0) -> np.ndarray:
    """In-process `sox -n spectrogram` PNG, cropped and resized as the book does: (height, width, 3) in [0, 1]."""
    # sox defaults: 800 columns over the clip, Hann window of 1024 samples at 44.1 kHz (~23 ms), one DFT per
    # column centred on it, dBFS (full-scale sine = 0 dB) over a 120 dB range, its own palette. The book's crop
    # [42:542, 58:858] keeps bins 1..500 of 513 (drops 0 Hz and the top 12) and all 800 columns; PIL's
    # downscale to 160x100 then averages the colours, here 5-column blocks and an area-weighted row resize.
    y = np.asarray(y, np.float32)
    n_fft = int(2 ** round(np.log2(1024 * sr / 44100)))
    n_cols = 5 * width
    hop = max(1, y.shape[-1] // n_cols)
    win = _sox_window(n_fft)
    padded = np.pad(y, (n_fft // 2, n_fft // 2 + n_cols * hop))
    starts = hop // 2 + hop * np.arange(n_cols)  # window centred on each column's middle sample
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[starts]
    spec = scipy.fft.rfft(frames * win, axis=1)
    n_rows = round(n_fft / 2 * 500 / 512)
    power = np.abs(spec[:, 1 : n_rows + 1]) ** 2  # columns x rows, low frequencies first
    level = 1 + 10 * np.log10(power + 1e-30) / top_db  # 0 at -top_db dBFS, 1 at full scale
    index = np.clip(level * (len(_palette()) - 1), 0, len(_palette()) - 1).astype(np.intp)
    rgb = _palette()[index]  # (800 columns, rows, 3)
    rgb = rgb.reshape(width, 5, n_rows, 3).mean(axis=1)  # 5 columns -> 1
    rgb = _area_matrix(n_rows, height) @ rgb.transpose(1, 0, 2).reshape(n_rows, width * 3)  # rows -> height
    return np.ascontiguousarray(rgb.reshape(height, width, 3)[::-1])  # image row 0 = highest frequency, as in a PNG


@functools.lru_cache(maxsize=8)
def _sox_window(n_fft: int) -> np.ndarray:
    """sox's Hann window scaled by 2 / sum, so a full-scale sine peaks at 0 dBFS."""
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return (win * 2 / win.sum()).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _palette(points: int = 251) -> np.ndarray:
    """sox spectrogram's default palette (black, purple, red, yellow, white), (points, 3) in [0, 1]."""
    x = np.linspace(0.0, 1.0, points)
    red = np.where(x < 0.13, 0, np.where(x < 0.73, np.sin((x - 0.13) / 0.60 * np.pi / 2), 1))
    green = np.where(x < 0.60, 0, np.where(x < 0.91, np.sin((x - 0.60) / 0.31 * np.pi / 2), 1))
    blue = np.where(x < 0.60, 0.5 * np.sin(x / 0.60 * np.pi), np.where(x < 0.78, 0, (x - 0.78) / 0.22))
    # sox quantises to 8-bit PNG colours; the book then divides by 255.
    return (np.round(np.stack([red, green, blue], axis=1) * 255) / 255).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights averaging each output cell's share of the input cells (a box-filter resize)."""
    edges = np.linspace(0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


REPRESENTATIONS: dict[str, Callable[..., np.ndarray]] = {
    "raw": raw_vector,
    "engineered": engineered_vector,
    "logmel": logmel,
    "logmel_deltas": logmel_deltas,
    "pcen": pcen,
    "mfcc": mfcc,
    "book_image": book_image,
    "birdnet": pretrained.birdnet_embedding,  # optional extra: raises SoundflowError saying how to install it
}


# Representations computed at their own sample rate from the source audio (the manifest's regions) instead of
# from the pipeline's clips: BirdNET was trained on 48-kHz audio (ESC-10 hop 1 s, rbf_svm: bench in README).
OWN_RATES: dict[str, int] = {"birdnet": pretrained.MODEL_SR}


def rate_of(kind: str, sr: int) -> int:
    """The sample rate representation `kind` is computed at: its own if it declares one, else the pipeline's."""
    return OWN_RATES.get(kind, int(sr))


class SourceWindows:
    """The manifest's segments decoded from their source files at `sr`, each padded or trimmed to `window_s` as
    the clips are; a lazy sequence (row i is read when asked for)."""

    def __init__(self, manifest: pd.DataFrame, *, sr: int, window_s: float):
        self.rows = manifest[["path", "start_s", "duration_s"]].astype(object).to_numpy()
        self.sr, self.n_samples = int(sr), round(sr * window_s)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        path, start_s, duration_s = self.rows[i]
        y, _ = decode_region(path, sr=self.sr, start_s=start_s, end_s=start_s + duration_s, allow_silent=True)
        return fix_length(y, n_samples=self.n_samples)


def compute(kind: str, clips: np.ndarray, sr: int, *, n_jobs: int = 2, **opts) -> np.ndarray:
    """One representation of every clip: clips (..., L) -> (..., *feature_shape) float32."""
    fn = _representation(kind)
    flat = clips.reshape(-1, clips.shape[-1])
    if not len(flat):
        raise SoundflowError(f"features {kind}: no clips (shape {clips.shape})")
    first = fn(flat[0], sr, **opts)
    out = np.empty((len(flat),) + first.shape, np.float32)
    _fill(kind, fn, flat, sr, opts, out, n_jobs)
    return out.reshape(clips.shape[:-1] + first.shape)


def _representation(kind: str) -> Callable[..., np.ndarray]:
    if kind not in REPRESENTATIONS:
        raise SoundflowError(f"unknown representation {kind!r}; choose one of {sorted(REPRESENTATIONS)}")
    return REPRESENTATIONS[kind]


def resolved_opts(kind: str, opts: dict) -> dict:
    """Every keyword option of representation `kind`, defaults filled in (so a saved model survives a change
    of defaults); raises SoundflowError naming any option `kind` does not take."""
    defaults = {
        p.name: p.default
        for p in inspect.signature(_representation(kind)).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise SoundflowError(f"features {kind}: unknown option(s) {unknown}; it takes {list(defaults)}")
    return {**defaults, **opts}


def _fill(
    kind: str,
    fn: Callable[..., np.ndarray],
    flat: np.ndarray | SourceWindows,
    sr: int,
    opts: dict,
    out: np.ndarray,
    n_jobs: int,
) -> None:
    """out[i] = fn(flat[i]) in chunks over n_jobs threads (FFTs and BLAS release the GIL), logging every ~10%."""
    log, n, start = run_logger(__name__), len(flat), time.perf_counter()
    chunks = [(a, min(a + _CHUNK, n)) for a in range(0, n, _CHUNK)]

    def run(bounds: tuple[int, int]) -> int:
        for i in range(*bounds):
            out[i] = fn(np.asarray(flat[i], np.float32), sr, **opts)
        return bounds[1] - bounds[0]

    done, next_report = 0, max(1, n // 10)
    # One BLAS thread per worker: OpenBLAS's own threads spin on shared cores (mel matmul measured 10x slower).
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        for count in pool.map(run, chunks):
            done += count
            drop_pages(out)  # written pages go to the file; this process keeps no more than the chunks in flight
            drop_pages(flat)
            if done >= next_report or done == n:
                log.info(
                    "features %s: %d/%d clips (%.0f clips/s)",
                    kind,
                    done,
                    n,
                    done / max(time.perf_counter() - start, 1e-9),
                )
                next_report = done + max(1, n // 10)


def features_file(
    clips_path: Path,
    kind: str,
    sr: int,
    opts: dict,
    out_dir: Path,
    *,
    n_jobs: int = 2,
    manifest_path: str | Path | None = None,
) -> Path:
    """out_dir/<kind>-<digest>.npy of the clips file's representation, computed and written only if missing.

    With `manifest_path` (one row per clip), a representation that has its own rate (OWN_RATES) is computed from
    the manifest's source regions decoded at that rate, keyed by their content hashes and regions."""
    clips_path, fn = Path(clips_path), _representation(kind)
    clips = np.load(clips_path, mmap_mode="r")
    flat, rate = clips.reshape(-1, clips.shape[-1]), int(sr)
    version = _VERSIONS.get(kind, _CACHE_VERSION)
    if manifest_path is not None and rate_of(kind, sr) != sr:
        manifest = read_manifest(manifest_path)
        if len(manifest) != len(flat):
            raise SoundflowError(f"{manifest_path}: {len(manifest)} rows for the {len(flat)} clips of {clips_path}")
        rate = rate_of(kind, sr)
        flat = SourceWindows(manifest, sr=rate, window_s=clips.shape[-1] / sr)
        regions = manifest[["content_hash", "start_s", "duration_s"]].astype(object).to_numpy().tolist()
        key = digest("sources", regions, flat.n_samples, kind, rate, opts, version)
    else:
        key = digest(file_key(clips_path), kind, rate, opts, version)
    out_path = Path(out_dir) / f"{kind}-{key}.npy"
    if out_path.exists():
        return out_path
    shape = fn(np.asarray(flat[0], np.float32), rate, **opts).shape
    with atomic_path(out_path) as tmp:  # write straight to disk: 8,000 book images are 1.5 GB
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=clips.shape[:-1] + shape)
        _fill(kind, fn, flat, rate, opts, out.reshape((len(flat),) + shape), n_jobs)  # a view: same mapping
        out.flush()
        del out
    return out_path


def example_grid(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, per_class: int = 3) -> Figure:
    """The book's Figure 12-5: the first `per_class` images of each class, one class per row (Agg, no pyplot)."""
    labels = np.asarray(labels)
    fig = Figure(figsize=(1.6 * per_class + 1.2, 1.1 * len(class_names)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(class_names), per_class, squeeze=False)
    for row, name in enumerate(class_names):
        picks = np.flatnonzero(labels == row)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(picks):
                image = np.asarray(images[picks[col]])
                ax.imshow(image, aspect="auto", origin="upper", cmap=None if image.ndim == 3 else "magma")
            if col == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    return fig


@task(cache_policy=NO_CACHE, task_run_name="features {kind}")
def features_task(
    clips_path: str, kind: str, sr: int, opts: dict, data_dir: str, manifest_path: str | None = None
) -> str:
    """Compute (or reuse) one representation of a clips file under data_dir/features; return its path.

    manifest_path: the clips' manifest, for representations computed from the source audio at their own rate."""
    return str(
        features_file(Path(clips_path), kind, sr, opts, Path(data_dir) / "features", manifest_path=manifest_path)
    )
