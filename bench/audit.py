"""Cost of the leakage audit per 1,000 segments on generated data (1,000 and 10,000 segments), and on ESC-10.

    nice -n 10 python bench/audit.py                  # 1,000 and 10,000 generated 1 s segments + ESC-10
    nice -n 10 python bench/audit.py --sizes 1000 --no-esc10

Generated segments (16 kHz, 1 s): 50 speakers x 10 classes, each speaker with its own filter and pitch per
class, named spkNN_takeT_label.wav; 1% are planted copies (half byte-identical, half at -6 dB shifted 10 ms)
and their recall is reported. X for the cross-validation is a generated 1,210-value vector with a
weak class part and a strong part per (speaker, class), so a per-file split leaks (computing the engineered
vector is the caller's cost, not the audit's). ESC-10 goes through the current ingestion at
22,050 Hz with its official folds; its engineered vectors are computed first and not timed. Also on
ESC-10: the share of copies at -6 dB shifted by 10-100 ms that the near-duplicate threshold still catches.

Short clips (--short-clips N, default 3,000): N distinct word-like sounds of one kind (a harmonic tone under
moving formants, random pitch contour and syllable loudness, 0.1-2.3 s at 8 kHz with quiet room noise around
it), zero-padded into 5 s windows as the ingestion pads them, with their manifest duration; every near pair
found among them is a false pair. Then copies of 200 of them of each kind (OGG and MP3 re-encoded, 16-bit WAV,
gain -20..+6 dB, trimmed, shifted later in the window, resampled through 11.025 or 6 kHz) and the share of
each kind found (recall).
Ends with key=value lines.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import scipy.signal
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config import SHARED_ESC10  # noqa: E402
from tasks.data.audit import audit  # noqa: E402
from tasks.data.duplicates import (  # noqa: E402
    DEFAULT_THRESHOLD,
    fingerprints,
    near_duplicates,
    sound_spans,
)

SR = 16_000
ESC10 = SHARED_ESC10


def generated(n: int, *, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, set[frozenset]]:
    """(manifest, clips, X, planted duplicate pairs) for n one-second segments."""
    rng = np.random.default_rng(seed)
    n_planted = max(2, n // 100) // 2 * 2
    base = n - n_planted
    speakers, classes = 50, 10
    spk = rng.integers(0, speakers, base)
    cls = np.arange(base) % classes
    t = np.arange(SR) / SR
    pitch = rng.uniform(200, 3000, (speakers, classes))
    env = np.stack([np.interp(t, np.linspace(0, 1, 10), e) for e in rng.uniform(0.1, 1, (base, 10))])
    clips = (
        0.3 * env * np.sin(2 * np.pi * pitch[spk, cls][:, None] * t * rng.uniform(0.99, 1.01, (base, 1)))
        + 0.02 * rng.standard_normal((base, SR))
    ).astype(np.float32)
    for s in range(speakers):
        rows = spk == s
        clips[rows] = scipy.signal.sosfilt(
            scipy.signal.butter(2, rng.uniform(800, 6000), "low", fs=SR, output="sos"), clips[rows], axis=1
        )
    names = [f"spk{s:02d}_take{i // (speakers * classes) + 1}_c{c}" for i, (s, c) in enumerate(zip(spk, cls))]
    names = [f"{name}_{i}" for i, name in enumerate(names)]
    hashes = [f"h{i}" for i in range(base)]
    src = rng.choice(base, n_planted, replace=False)
    copies = []
    for j, i in enumerate(src):
        if j % 2:
            copies.append(0.5 * np.concatenate([clips[i, 160:], np.zeros(160, np.float32)]))
            hashes.append(f"h{base + j}")
        else:
            copies.append(clips[i])
            hashes.append(hashes[i])
        names.append(f"spk{spk[i]:02d}_take9_c{cls[i]}_copy{j}")
    clips = np.concatenate([clips, np.stack(copies).astype(np.float32)])
    labels = np.concatenate([cls, cls[src]])
    m = pd.DataFrame(
        {
            "path": [f"/gen/{name}.wav" for name in names],
            "recording_id": names,
            "label": [f"c{c}" for c in labels],
            "class_id": labels,
            "fold": pd.array([pd.NA] * n, "Int64"),
            "group": names,
            "content_hash": hashes,
        }
    )
    speaker_of = np.concatenate([spk, spk[src]])
    rendition = rng.standard_normal((speakers, classes, 1210))  # each speaker's own take on each class
    X = (
        rng.standard_normal((classes, 1210))[labels] * 0.05
        + rendition[speaker_of, labels]
        + 2 * rng.standard_normal((n, 1210))
    ).astype(np.float32)
    planted = {frozenset((names[i], names[base + j])) for j, i in enumerate(src)}
    return m, clips, X, planted


SHORT_SR, SHORT_WINDOW_S = 8_000, 5.0
COPY_KINDS = ("ogg", "mp3", "wav16", "gain", "trimmed", "shifted", "resampled")


def word_like(rng: np.random.Generator, *, sr: int = SHORT_SR) -> np.ndarray:
    """A 0.1-2.3 s recording of a word-like sound: harmonics of a random pitch contour (with a little jitter)
    under three moving formants and a syllable-like loudness, with quiet noise (-55 dB) around it."""
    n = int(rng.uniform(0.1, 2.3) * sr)
    lead, tail = (rng.uniform(0, 0.15, 2) * n).astype(int)
    m = max(n - lead - tail, 16)
    t = np.linspace(0, 1, m, dtype=np.float32)
    duration_s = m / sr

    def wander(n_points: int, lo: float, hi: float) -> np.ndarray:
        return np.interp(t, np.linspace(0, 1, n_points), rng.uniform(lo, hi, n_points)).astype(np.float32)

    contour = 2 ** wander(int(rng.integers(2, 6)), -0.4, 0.4)
    jitter = 2 ** wander(max(2, int(duration_s / 0.05)), -0.03, 0.03)
    f0 = rng.uniform(90, 250) * contour * jitter
    phase = 2 * np.pi * np.cumsum(f0) / sr
    n_phones = max(2, int(duration_s / 0.12))
    formants = [wander(n_phones, lo, hi) for lo, hi in ((300, 900), (900, 2500), (2300, 3500))]
    y = np.zeros(m, np.float32)
    for h in range(1, 25):
        f = h * f0
        gain = sum(1 / (1 + ((f - fk) / 120) ** 2) for fk in formants) * (f < sr / 2 - 100)
        y += gain * np.sin(h * phase)
    ramp = np.minimum(t * m / (rng.uniform(0.01, 0.05) * sr), (1 - t) * m / (rng.uniform(0.02, 0.1) * sr))
    y *= np.minimum(1, ramp) * wander(max(2, int(duration_s / 0.08)), 0.2, 1)
    y = np.concatenate([np.zeros(lead, np.float32), y, np.zeros(tail, np.float32)])
    y /= np.abs(y).max() + 1e-12
    y += 10 ** (-55 / 20) * rng.standard_normal(len(y)).astype(np.float32)
    return (rng.uniform(0.1, 0.9) * y).astype(np.float32)


def copy_of(y: np.ndarray, kind: str, rng: np.random.Generator, *, sr: int = SHORT_SR) -> np.ndarray:
    """A copy of recording y as it might come back from someone else's folder."""
    if kind in ("ogg", "mp3", "wav16"):
        fmt, subtype = {"ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III"), "wav16": ("WAV", "PCM_16")}[kind]
        buf = io.BytesIO()
        sf.write(buf, y, sr, format=fmt, subtype=subtype)
        buf.seek(0)
        return sf.read(buf, dtype="float32")[0]
    if kind == "gain":
        return y * np.float32(10 ** (rng.uniform(-20, 6) / 20))
    if kind == "trimmed":
        return librosa.effects.trim(y, top_db=30, frame_length=256, hop_length=64)[0]
    if kind == "shifted":
        return np.concatenate([np.zeros(int(rng.uniform(0.05, 0.5) * sr), np.float32), y])
    if kind == "resampled":
        via = 11_025 if rng.random() < 0.5 else 6_000
        return librosa.resample(librosa.resample(y, orig_sr=sr, target_sr=via), orig_sr=via, target_sr=sr)
    raise ValueError(f"unknown copy kind {kind!r}; one of {COPY_KINDS}")


def padded_fingerprints(
    recordings: list[np.ndarray], *, sr: int = SHORT_SR, window_s: float = SHORT_WINDOW_S, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(fingerprints, sound seconds) of recordings zero-padded (or cut) into one window each with their
    manifest duration, as the ingestion does, a chunk at a time (a 5 s window at 8 kHz is 160 kB)."""
    window = round(window_s * sr)
    fps, sound = [], []
    for start in range(0, len(recordings), chunk):
        part = recordings[start : start + chunk]
        clips = np.zeros((len(part), window), np.float32)
        for i, y in enumerate(part):
            clips[i, : min(len(y), window)] = y[:window]
        spans = sound_spans(clips, sr, duration_s=[min(len(y), window) / sr for y in part])
        fps.append(fingerprints(clips, sr, spans=spans))
        sound.append((spans[:, 1] - spans[:, 0]) / sr)
    return np.concatenate(fps), np.concatenate(sound)


def short_clip_check(n: int, *, n_copies: int = 200, seed: int = 0, kinds=COPY_KINDS) -> dict:
    """False near pairs among n distinct word-like clips, and the share of n_copies copies of each kind found."""
    rng = np.random.default_rng(seed)
    originals = [word_like(rng) for _ in range(n)]
    copies = [copy_of(originals[i], kind, rng) for kind in kinds for i in range(min(n_copies, n))]
    source = np.concatenate([np.arange(n), np.tile(np.arange(min(n_copies, n)), len(kinds))])
    kind_of = np.concatenate([np.full(n, ""), np.repeat(kinds, min(n_copies, n))])
    fp, sound_s = padded_fingerprints(originals + copies)
    ids = [f"w{s}" if not k else f"w{s}-{k}" for s, k in zip(source, kind_of)]
    m = pd.DataFrame(
        {
            "path": ids,
            "recording_id": ids,
            "label": "word",
            "class_id": 0,
            "fold": pd.array([pd.NA] * len(ids), "Int64"),
            "group": ids,
            "content_hash": [f"h{i}" for i in range(len(ids))],
        }
    )
    pairs = near_duplicates(fp, m, sound_s=sound_s)
    a, b = pairs["index_a"].to_numpy(), pairs["index_b"].to_numpy()
    false = source[a] != source[b]
    out = {
        "false_pairs": int(false.sum()),
        "false_max_similarity": float(pairs["similarity"][false].max()) if false.any() else float("nan"),
    }
    found = set(zip(a[~false], b[~false])) | set(zip(b[~false], a[~false]))
    for kind in kinds:
        rows = np.flatnonzero(kind_of == kind)
        out[f"recall_{kind}"] = float(np.mean([(source[r], r) in found for r in rows]))
    return out


def esc10() -> dict:
    """Full audit of ESC-10 with its official folds, X given."""
    import tempfile

    from tasks.data.ingest import build
    from tasks.data.manifest import read_manifest
    from tasks.features.representations import compute

    out = Path(tempfile.gettempdir()) / "audit-bench-esc10"
    data = build(ESC10, dataset="esc10", sr=22_050, out_dir=out)
    m = read_manifest(data.manifest)
    clips = np.load(data.clips)
    X = compute("engineered", clips, 22_050)
    start = time.perf_counter()
    result = audit(m, clips, 22_050, X, seed=0)
    seconds = time.perf_counter() - start
    print(f"ESC-10: {seconds:.1f} s  {result.timings}\n  {result.verdict}", flush=True)
    crossing = int(result.duplicates["crosses_fold"].fillna(True).astype(bool).sum())
    fp, found = fingerprints(clips, 22_050), {}
    for shift_ms in (10, 20, 50, 100):
        shift = round(22_050 * shift_ms / 1000)
        moved = 0.5 * np.concatenate([clips[:, shift:], np.zeros((len(clips), shift), np.float32)], axis=1)
        found[f"esc10_shifted_copy_recall_{shift_ms}ms"] = float(
            np.mean((fingerprints(moved, 22_050) * fp).sum(axis=1) >= DEFAULT_THRESHOLD)
        )
    print(f"  copies at -6 dB shifted by 10/20/50/100 ms found: {list(found.values())}", flush=True)
    return {
        **found,
        "esc10_audit_s": f"{seconds:.2f}",
        "esc10_gap_points": f"{result.gap_points:.1f}",
        "esc10_noise_points": f"{result.noise_points:.1f}",
        "esc10_duplicate_pairs": len(result.duplicates),
        "esc10_pairs_crossing_folds": crossing,
        "esc10_leak": result.leak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000])
    ap.add_argument("--no-esc10", action="store_true")
    ap.add_argument("--short-clips", type=int, default=3000, help="distinct short clips (0: skip)")
    args = ap.parse_args()

    fingerprints(np.zeros((2, SR), np.float32) + 1e-3, SR)  # librosa's mel filters: first call compiles
    keys: dict[str, object] = {}
    for n in args.sizes:
        m, clips, X, planted = generated(n)
        start = time.perf_counter()
        result = audit(m, clips, SR, X, seed=0)
        total = time.perf_counter() - start
        per_k = {k.removesuffix("_s"): v / (n / 1000) for k, v in result.timings.items()}
        found = {frozenset(p) for p in result.duplicates[["recording_a", "recording_b"]].to_numpy()}
        recall = len(planted & found) / len(planted)
        print(
            f"n={n}: {total:.1f} s; per 1,000 segments: " + ", ".join(f"{k} {v:.2f} s" for k, v in per_k.items()),
            flush=True,
        )
        print(
            f"  planted copies found {recall:.0%}, other pairs {len(found - planted)}; cv on {result.n_cv_segments}"
            f" segments; proposed {result.proposed_pattern!r}, gap {result.gap_points:.1f}",
            flush=True,
        )
        tag = f"at_{n // 1000}k"
        keys.update(
            {
                f"audit_s_per_1k_{tag}": f"{total / (n / 1000):.2f}",
                f"fingerprint_s_per_1k_{tag}": f"{per_k['fingerprints']:.3f}",
                f"near_dup_s_per_1k_{tag}": f"{per_k['near_duplicates']:.3f}",
                f"hints_s_per_1k_{tag}": f"{per_k['hints']:.3f}",
                f"cv_s_per_1k_{tag}": f"{per_k['cv']:.3f}",
                f"planted_recall_{tag}": f"{recall:.3f}",
                f"other_pairs_{tag}": len(found - planted),
                f"gap_points_{tag}": f"{result.gap_points:.1f}",
            }
        )
        if n == max(args.sizes):
            keys["audit_s_per_1k"] = f"{total / (n / 1000):.2f}"
            near = result.timings["near_duplicates_s"]
            keys["near_dup_s_at_40k_projected"] = f"{near * (40_000 / n) ** 2:.1f}"
    if not args.no_esc10 and ESC10.is_dir():
        keys.update(esc10())
    if args.short_clips:
        start = time.perf_counter()
        short = short_clip_check(args.short_clips)
        print(
            f"short clips: {short['false_pairs']} false pairs among {args.short_clips} distinct word-like clips"
            f" padded to 5 s; copies found: "
            + ", ".join(f"{k} {short[f'recall_{k}']:.1%}" for k in COPY_KINDS)
            + f" ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        keys.update({f"short_{k}": (f"{v:.3f}" if isinstance(v, float) else v) for k, v in short.items()})
        keys["short_n_distinct"] = args.short_clips
    for key, value in keys.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
