"""Ingestion throughput: the real ESC-10 (400 five-second clips) and a generated set of long recordings.

Each set is ingested cold (hash, decode, resample, window, write) into a fresh folder, then warm (cache hit).
Usage: .venv/bin/python bench/ingest.py [--long-recordings 24 --long-minutes 2.5 --n-jobs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _long_set(root: Path, *, n: int, minutes: float, sr: int = 44100) -> float:
    """n stereo field recordings (tones, noise bands, silence) of `minutes` each in 3 classes; total hours."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    for i in range(n):
        label = ("birds", "traffic", "wind")[i % 3]
        n_samples = round(minutes * 60 * sr)
        t = np.arange(n_samples) / sr
        y = 0.05 * rng.standard_normal(n_samples) + 0.2 * np.sin(2 * np.pi * (500 + 700 * (i % 3)) * t)
        y[: n_samples // 10] = 0.0  # a silent start
        path = root / label / f"site{i // 3:02d}_{label}_{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.stack([y, 0.8 * y], axis=1).astype(np.float32), sr)
    return n * minutes / 60


def _time_build(source: Path, out: Path, **kw) -> tuple[float, float, dict]:
    from tasks.data.ingest import build

    t0 = time.perf_counter()
    data = build(source, out_dir=out, **kw)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    build(source, out_dir=out, **kw)
    return cold, time.perf_counter() - t0, data


def main() -> None:
    from prefect.logging import disable_run_logger

    from tasks.config import SHARED_ESC10

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", default=str(SHARED_ESC10))
    ap.add_argument("--long-recordings", type=int, default=24)
    ap.add_argument("--long-minutes", type=float, default=2.5)
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soundflow-bench-ingest-"))
    os.environ["SOUNDFLOW_DATA"] = str(tmp / "data")
    out: dict[str, float] = {}
    try:
        with disable_run_logger():
            cold, warm, data = _time_build(Path(args.source), tmp / "esc10", sr=22050, n_jobs=args.n_jobs)
            hours = 400 * 5 / 3600
            out.update(
                esc10_cold_s=cold,
                esc10_warm_s=warm,
                esc10_recordings_per_s=data.n_recordings / cold,
                esc10_audio_hours_per_s=hours / cold,
            )
            hours = _long_set(tmp / "long", n=args.long_recordings, minutes=args.long_minutes)
            cold, warm, data = _time_build(
                tmp / "long", tmp / "long-out", sr=22050, window_s=5.0, group_pattern=r"^(site\d+)_", n_jobs=args.n_jobs
            )
            out.update(
                long_cold_s=cold,
                long_warm_s=warm,
                long_recordings_per_s=data.n_recordings / cold,
                long_audio_hours_per_s=hours / cold,
                long_segments=data.n_clips,
                long_audio_hours=hours,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for key, value in out.items():
        print(f"{key}={value:.4g}")


if __name__ == "__main__":
    main()
