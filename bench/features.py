"""Clips per second of every representation on real ESC-10 clips.

    python bench/features.py                 # 100 clips (10 per class) at 22,050 Hz, 1 and 2 threads
    python bench/features.py --clips 40 --sr 44100 --rounds 1

Decoding is set-up and not timed; each representation is warmed up on two clips first (librosa's
numba kernels). Rounds are repeated and medians reported. Ends with key=value lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config import SHARED_ESC10  # noqa: E402
from tasks.data.audio import load_audio  # noqa: E402
from tasks.features.representations import REPRESENTATIONS, compute  # noqa: E402


def pick_clips(root: Path, n: int) -> list[Path]:
    """n clips spread evenly over the class folders (sorted, so the same every run)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    per_class = -(-n // len(folders))
    return [p for f in folders for p in sorted(f.glob("*.ogg"))[:per_class]][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--sr", type=int, default=22_050)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kinds", nargs="*", default=list(REPRESENTATIONS))
    args = ap.parse_args()

    clips = np.stack([load_audio(p, sr=args.sr, duration_s=5.0) for p in pick_clips(SHARED_ESC10, args.clips)])
    rates: dict[str, float] = {}
    for kind in args.kinds:
        compute(kind, clips[:2], args.sr, n_jobs=1)
        for n_jobs in (1, 2):
            seconds = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                out = compute(kind, clips, args.sr, n_jobs=n_jobs)
                seconds.append(time.perf_counter() - start)
            rates[f"{kind}_{n_jobs}job"] = len(clips) / statistics.median(seconds)
            print(
                f"{kind:>14} {n_jobs} thread(s): {rates[f'{kind}_{n_jobs}job']:8.1f} clips/s  -> {out.shape[1:]}",
                flush=True,
            )
    print(f"clips={len(clips)}")
    print(f"sr={args.sr}")
    for key, value in rates.items():
        print(f"{key}_clips_per_s={value:.1f}")


if __name__ == "__main__":
    main()
