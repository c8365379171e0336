"""Time the book's augmentation recipe against ours on the same real ESC-10 clips, in one process.

    python bench/augment.py                  # 100 clips (10 per class), 5 copies each, 3 rounds
    python bench/augment.py --clips 40 --copies 2 --rounds 1

Book: 44.1 kHz int16 .wav in, librosa pitch_shift / time_stretch, one file and one copy at a time,
each copy written as a .wav (Kneusel ch. 12). Ours: tasks.augment.augment_clips at 22,050 Hz on the
clip array with n_jobs=2 (this process plus one spawned worker once a job has >= 500 copies), one .npy
out, worker start-up included; and the same with n_jobs=1. Decoding the .ogg sources is set-up for
both and not timed. Rounds alternate; medians are reported. Ends with key=value lines, the last
`ratio=<book ms per copy / ours ms per copy>`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config import SHARED_ESC10  # noqa: E402
from tasks.data.audio import load_audio  # noqa: E402

# tasks.augment.copies (and so Prefect) is imported inside run_ours: spawned workers re-import this script as
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


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (worker pools), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_book(wavs: list[Path], copies: int, out_dir: Path, seed: int) -> tuple[float, float]:
    """(wall, CPU) seconds for the book's loop: read each .wav, write `copies` augmented .wav files."""
    from scipy.io import wavfile

    rng = np.random.default_rng(seed)
    start, cpu = time.perf_counter(), cpu_seconds()
    for path in wavs:
        sr, d = wavfile.read(path)
        for j in range(copies):
            wavfile.write(out_dir / f"{path.stem}_{j:02d}.wav", sr, book_augment(d, sr, rng).astype(np.int16))
    return time.perf_counter() - start, cpu_seconds() - cpu


def run_ours(clips: np.ndarray, sr: int, copies: int, out_path: Path, seed: int, n_jobs: int) -> tuple[float, float]:
    """(wall, CPU) seconds for augment_clips over the clip array (worker start-up included)."""
    from tasks.augment.copies import AugmentParams, augment_clips

    params = AugmentParams(n_copies=copies)
    start, cpu = time.perf_counter(), cpu_seconds()
    augment_clips(clips, sr, params=params, seed=seed, clip_keys=range(len(clips)), out_path=out_path, n_jobs=n_jobs)
    wall = time.perf_counter() - start
    for child in multiprocessing.active_children():  # a worker may still be exiting: count its CPU here
        child.join()
    return wall, cpu_seconds() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--copies", type=int, default=5)
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

        runs: dict[str, list[tuple[float, float]]] = {"book": [], "ours": [], "ours_1job": []}
        for r in range(args.rounds):
            book_dir = tmp / f"book{r}"
            book_dir.mkdir()
            runs["book"].append(run_book(wavs, args.copies, book_dir, seed=r))
            runs["ours"].append(run_ours(clips, args.sr, args.copies, tmp / f"ours{r}.npy", r, n_jobs=args.jobs))
            runs["ours_1job"].append(run_ours(clips, args.sr, args.copies, tmp / f"ours1-{r}.npy", r, n_jobs=1))
            print(
                f"round {r + 1}: "
                + ", ".join(f"{name} {1000 * t[-1][0] / n_out:.1f} ms/copy" for name, t in runs.items()),
                flush=True,
            )

    wall = {name: 1000 * statistics.median(w for w, _ in t) / n_out for name, t in runs.items()}
    cpu = {name: 1000 * statistics.median(c for _, c in t) / n_out for name, t in runs.items()}
    print(
        f"book recipe (44.1 kHz, librosa, .wav per copy): {wall['book']:.1f} ms per augmented clip "
        f"({cpu['book']:.1f} ms CPU)"
    )
    print(
        f"ours ({args.sr} Hz, n_jobs={args.jobs}, in memory): {wall['ours']:.1f} ms per augmented clip "
        f"({cpu['ours']:.1f} ms CPU, worker start-up included)"
    )
    print(f"ours in-process (1 job): {wall['ours_1job']:.1f} ms per augmented clip ({cpu['ours_1job']:.1f} ms CPU)")
    print(f"clips={len(paths)}")
    print(f"copies_per_clip={args.copies}")
    print(f"augmented_clips={n_out}")
    print(f"rounds={args.rounds}")
    for name in runs:
        print(f"{name}_ms_per_clip={wall[name]:.2f}")
        print(f"{name}_cpu_ms_per_clip={cpu[name]:.2f}")
    print(f"cpu_ratio={cpu['book'] / cpu['ours']:.2f}")
    print(f"ratio_1job={wall['book'] / wall['ours_1job']:.2f}")
    print(f"ratio={wall['book'] / wall['ours']:.2f}")


if __name__ == "__main__":
    main()
