"""Time the book's augmentation recipe against ours on the same real ESC-10 clips, in one process.

    python bench/augment.py                  # 100 clips (10 per class), 3 copies each, 3 rounds
    python bench/augment.py --clips 40 --copies 2 --rounds 1

Book: 44.1 kHz int16 .wav in, librosa pitch_shift / time_stretch, one file and one copy at a time,
each copy written as a .wav (Kneusel ch. 12). Ours: tasks.augment.augment_clips at 22,050 Hz on the
clip array, 2 worker processes, one .npy out (spawn, shards and assembly included). Decoding the
.ogg sources is set-up for both and not timed. Rounds alternate; medians are reported. Ends with
key=value lines, the last `ratio=<book ms per copy / ours ms per copy>`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.audio import load_audio  # noqa: E402
from tasks.config import SHARED_ESC10  # noqa: E402

# tasks.augment (and so Prefect) is imported inside run_ours: spawned workers re-import this script as
# __mp_main__, and a heavy top level would be timed as worker start-up (see the report on __main__ imports).


def pick_clips(root: Path, n: int) -> list[Path]:
    """n clips spread evenly over the class folders (sorted, so the same every run)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    per_class = -(-n // len(folders))
    return [p for f in folders for p in sorted(f.glob("*.ogg"))[:per_class]][:n]


def book_augment(d: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The book's augment(): shift, non-negative noise, librosa pitch shift, librosa stretch (+crop/pad)."""
    import librosa

    n = len(d)
    d = d.astype(np.float32)
    if rng.random() < 0.5:
        s = int(sr / 4.0 * (rng.random() - 0.5))
        d = np.roll(d, s)
        if s < 0:
            d[s:] = 0
        else:
            d[:s] = 0
    if rng.random() < 0.5:
        d += 0.1 * (d.max() - d.min()) * rng.random(n).astype(np.float32)
    if rng.random() < 0.5:
        d = librosa.effects.pitch_shift(d, sr=sr, n_steps=20.0 * (rng.random() - 0.5))
    if rng.random() < 0.5:
        d = librosa.effects.time_stretch(d, rate=0.5 + rng.random())
        d = d[:n] if len(d) >= n else np.concatenate([d, np.zeros(n - len(d), np.float32)])
    return d


def run_book(wavs: list[Path], copies: int, out_dir: Path, seed: int) -> float:
    """Seconds for the book's loop: read each .wav, write `copies` augmented .wav files."""
    from scipy.io import wavfile

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for path in wavs:
        sr, d = wavfile.read(path)
        for j in range(copies):
            wavfile.write(out_dir / f"{path.stem}_{j:02d}.wav", sr, book_augment(d, sr, rng).astype(np.int16))
    return time.perf_counter() - start


def run_ours(clips: np.ndarray, sr: int, copies: int, out_path: Path, seed: int, n_jobs: int) -> float:
    """Seconds for augment_clips over the clip array (worker start-up included)."""
    from tasks.augment import AugmentParams, augment_clips

    params = AugmentParams(n_copies=copies)
    start = time.perf_counter()
    augment_clips(clips, sr, params=params, seed=seed, clip_keys=range(len(clips)), out_path=out_path, n_jobs=n_jobs)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sr", type=int, default=22_050, help="our working rate")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()

    import librosa
    from scipy.io import wavfile

    paths = pick_clips(SHARED_ESC10, args.clips)
    with tempfile.TemporaryDirectory(prefix="bench-augment-") as tmp:
        tmp = Path(tmp)
        wavs = []
        for path in paths:  # the book's input: 44.1 kHz 16-bit .wav files
            y = load_audio(path, sr=44_100, duration_s=5.0)
            wavs.append(tmp / f"{path.stem}.wav")
            wavfile.write(wavs[-1], 44_100, (np.clip(y, -1, 1) * 32767).astype(np.int16))
        clips = np.stack([load_audio(path, sr=args.sr, duration_s=5.0) for path in paths])
        n_out = len(paths) * args.copies
        # Warm-up (not timed): librosa's numba kernels compile or load from cache on first use.
        book_augment(np.zeros(44_100, np.int16), 44_100, np.random.default_rng(0))
        librosa.effects.pitch_shift(np.zeros(44_100, np.float32), sr=44_100, n_steps=1.0)
        librosa.effects.time_stretch(np.zeros(44_100, np.float32), rate=1.1)
        run_ours(clips[:2], args.sr, 1, tmp / "warm.npy", 0, n_jobs=1)

        book_s, ours_s, ours1_s = [], [], []
        for r in range(args.rounds):
            book_dir = tmp / f"book{r}"
            book_dir.mkdir()
            book_s.append(run_book(wavs, args.copies, book_dir, seed=r))
            ours_s.append(run_ours(clips, args.sr, args.copies, tmp / f"ours{r}.npy", seed=r, n_jobs=args.jobs))
            ours1_s.append(run_ours(clips, args.sr, args.copies, tmp / f"ours1-{r}.npy", seed=r, n_jobs=1))
            print(f"round {r + 1}: book {1000 * book_s[-1] / n_out:.1f} ms/copy, ours ({args.jobs} jobs) "
                  f"{1000 * ours_s[-1] / n_out:.1f} ms/copy, ours (1 job) {1000 * ours1_s[-1] / n_out:.1f} ms/copy",
                  flush=True)

    book_ms = 1000 * statistics.median(book_s) / n_out
    ours_ms = 1000 * statistics.median(ours_s) / n_out
    ours1_ms = 1000 * statistics.median(ours1_s) / n_out
    print(f"book recipe (44.1 kHz, librosa, .wav per copy): {book_ms:.1f} ms per augmented clip")
    print(f"ours ({args.sr} Hz, {args.jobs} processes, in memory): {ours_ms:.1f} ms per augmented clip")
    print(f"clips={len(paths)}")
    print(f"copies_per_clip={args.copies}")
    print(f"augmented_clips={n_out}")
    print(f"rounds={args.rounds}")
    print(f"book_ms_per_clip={book_ms:.2f}")
    print(f"ours_1job_ms_per_clip={ours1_ms:.2f}")
    print(f"ours_ms_per_clip={ours_ms:.2f}")
    print(f"ratio_1job={book_ms / ours1_ms:.2f}")
    print(f"ratio={book_ms / ours_ms:.2f}")


if __name__ == "__main__":
    main()
