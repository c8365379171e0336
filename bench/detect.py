"""Detection on synthetic soundscapes built the way URBAN-SED was built (Salamon et al. 2017): a champion trained on
ESC-10 folds 1-4 (the quick preset), soundscapes made from fold 5's clips only, so no event was seen in training.

- 10-s soundscapes: 1-9 events each, event durations 0.5-4 s, SNR uniform 6-30 dB over a Brownian-noise
  background, overlaps allowed (tasks/detection/soundscapes.py); ten 60-s recordings made the same way; ten
  background-only recordings of 6 minutes (one hour).
- `soundflow detect` over all of them as a user runs it (a new process, start-up included, 2 workers), from an
  empty output folder; then segment-based F1 and error rate at 1 s and event-based F1 with a 200-ms onset collar
  (tasks/detection/metrics.py) on the soundscapes and 60-s recordings, and false detections per hour on the
  background-only hour.

With --annotated, also a champion trained from annotated long recordings themselves (forty 60-s soundscapes of
folds 1-4's clips with their Raven tables: the `annotations` layout, grouped by recording) against the one trained
from isolated clips, both scored on the same held-out recordings.

Usage: .venv/bin/python bench/detect.py [--soundscapes 60] [--annotated] [--work data/bench/detect] [--detect-args "..."]
Prints seg_f1=, seg_er=, event_f1=, false_per_hour=, rtf= (audio seconds per wall second); with --annotated the same
with the prefix annotated_.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 44_100  # ESC-10's own rate: the BirdNET members read the files at 48 kHz, the others at 22,050 Hz


def _env(work: Path) -> dict[str, str]:
    """A store and data folder of the benchmark's own (the user's are not touched)."""
    return {
        **os.environ,
        "SOUNDFLOW_DATA": str(work / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }


def train(work: Path, preset: str) -> str:
    """The quick champion of ESC-10 folds 1-4 (a CSV of those clips with their folds and groups), registered in the
    benchmark's store; reused when it is already there."""
    from tasks.config import SHARED_ESC10
    from tasks.data.layouts import scan

    csv = work / "esc10-folds1-4.csv"
    name = f"soundflow-{csv.stem}"
    os.environ.update(_env(work))
    from tasks.tracking.registry import current_champion

    if current_champion(name) is not None:
        return name
    recs = scan(SHARED_ESC10).recordings
    recs[recs["fold"] <= 4][["path", "label", "fold", "group"]].to_csv(csv, index=False)
    cmd = [str(ROOT / ".venv/bin/soundflow"), "run", "--preset", preset, "--source", str(csv)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(work), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
    print(f"trained {name} with the {preset} preset in {time.perf_counter() - t0:.0f} s", flush=True)
    return name


def annotated_training_set(work: Path, n: int, seed: int, window_s: float) -> str:
    """Forty 60-s soundscapes of folds 1-4's clips, each with its Raven table, trained on as the annotations layout
    (windows of window_s every window_s / 2, grouped by recording); the registered model's name."""
    import soundfile as sf

    from tasks.config import SHARED_ESC10
    from tasks.data.audio import load_audio
    from tasks.data.layouts import scan
    from tasks.detection.soundscapes import make_soundscape

    folder = work / "annotated-folds1-4"
    name = f"soundflow-{folder.name}"
    os.environ.update(_env(work))
    from tasks.tracking.registry import current_champion

    if current_champion(name) is not None:
        return name
    recs = scan(SHARED_ESC10).recordings
    train = recs[recs["fold"] <= 4][["path", "label"]].values
    pool = [(load_audio(p, sr=SR, duration_s=None), label) for p, label in train]
    rng = np.random.default_rng(seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        y, events = make_soundscape(pool, sr=SR, duration_s=60.0, n_events=(3, 15), rng=rng)
        sf.write(folder / f"train{i:03d}.wav", y, SR, subtype="PCM_16")
        lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation"]
        lines += [
            f"{k}\tSpectrogram 1\t1\t{e.onset:.4f}\t{e.offset:.4f}\t{e.label}"
            for k, e in enumerate(events.itertuples(), 1)
        ]
        (folder / f"train{i:03d}.selections.txt").write_text("\n".join(lines) + "\n")
    cmd = [str(ROOT / ".venv/bin/soundflow"), "run", "--preset", "quick", "--source", str(folder)]
    cmd += ["--window-s", str(window_s), "--hop-s", str(window_s / 2)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(work), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"training from annotations failed:\n{proc.stderr[-3000:]}")
    print(f"trained {name} from {n} annotated recordings in {time.perf_counter() - t0:.0f} s", flush=True)
    return name


def soundscapes(work: Path, n: int, seed: int) -> tuple[Path, pd.DataFrame, dict[str, float]]:
    """The recordings (written once) and their reference events (file, onset, offset, label) and durations."""
    import soundfile as sf

    from tasks.config import SHARED_ESC10
    from tasks.data.audio import load_audio
    from tasks.data.layouts import scan
    from tasks.detection.soundscapes import background_only, make_soundscape

    folder = work / "soundscapes"
    ref_csv = folder / "reference.csv"
    if ref_csv.is_file():
        ref = pd.read_csv(ref_csv)
        durations = json.loads((folder / "durations.json").read_text())
        return folder, ref, durations
    recs = scan(SHARED_ESC10).recordings
    pool = [
        (load_audio(p, sr=SR, duration_s=None), label) for p, label in recs[recs["fold"] == 5][["path", "label"]].values
    ]
    rng = np.random.default_rng(seed)
    rows, durations = [], {}
    plan = [("scape", i, 10.0, (1, 9)) for i in range(n)] + [("long", i, 60.0, (3, 15)) for i in range(10)]
    for kind, i, seconds, count in plan:
        y, events = make_soundscape(pool, sr=SR, duration_s=seconds, n_events=count, rng=rng)
        path = folder / kind / f"{kind}{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y, SR, subtype="PCM_16")
        rows += [
            {"file": path.stem, "onset": e.onset, "offset": e.offset, "label": e.label} for e in events.itertuples()
        ]
        durations[path.stem] = seconds
    for i in range(10):
        path = folder / "background" / f"background{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, background_only(360.0, sr=SR, rng=rng), SR, subtype="PCM_16")
        durations[path.stem] = 360.0
    ref = pd.DataFrame(rows, columns=["file", "onset", "offset", "label"])
    ref.to_csv(ref_csv, index=False)
    (folder / "durations.json").write_text(json.dumps(durations))
    return folder, ref, durations


def detect(work: Path, folder: Path, model: str, extra: list[str]) -> tuple[pd.DataFrame, float, dict]:
    """`soundflow detect` in a new process over every recording, into an empty output folder: (detections, wall s,
    its JSON result)."""
    out = work / f"out-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [str(ROOT / ".venv/bin/soundflow"), "detect", str(folder), "--recursive", "--model", model]
    cmd += ["--out", str(out), "--n-jobs", "2", "--json", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(work), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"detect failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout[0 if proc.stdout.startswith("{") else proc.stdout.index("\n{") :])
    return pd.read_csv(out / "detections.csv"), wall, result


def evaluate(found: pd.DataFrame, ref: pd.DataFrame, durations: dict[str, float]) -> dict[str, float]:
    """Segment metrics at 1 s and event F1 (200-ms collar) on the labelled recordings; false detections per hour on
    the background-only ones."""
    from tasks.detection.metrics import event_metrics, segment_metrics

    found = found.assign(file=found["file"].map(lambda f: Path(f).stem))
    labelled = {f for f in durations if not f.startswith("background")}
    est = found[found["file"].isin(labelled)]
    seg = segment_metrics(ref, est, resolution_s=1.0, durations={f: durations[f] for f in labelled})
    ev = event_metrics(ref, est, t_collar_s=0.2)
    bg_hours = sum(d for f, d in durations.items() if f.startswith("background")) / 3600
    return {
        "seg_f1": seg["f1"],
        "seg_er": seg["error_rate"],
        "event_f1": ev["f1"],
        "false_per_hour": int((~found["file"].isin(labelled)).sum()) / bg_hours,
        "per_class": {k: round(v, 3) for k, v in seg["per_class"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(ROOT / "data" / "bench" / "detect"))
    parser.add_argument("--soundscapes", type=int, default=60, help="10-s soundscapes (URBAN-SED has 10,000)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detect-args", default="", help="further soundflow detect options, e.g. '--hop-s 0.5'")
    parser.add_argument("--annotated", action="store_true", help="also train from annotated long recordings")
    parser.add_argument("--annotated-recordings", type=int, default=40)
    parser.add_argument("--annotated-window-s", type=float, default=2.0)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    models = {"": train(work, args.preset)}
    if args.annotated:
        models["annotated_"] = annotated_training_set(
            work, args.annotated_recordings, args.seed, args.annotated_window_s
        )
    folder, ref, durations = soundscapes(work, args.soundscapes, args.seed)
    audio_s = sum(durations.values())
    lines = []
    for prefix, model in models.items():
        found, wall, result = detect(work, folder, model, shlex.split(args.detect_args))
        figures = evaluate(found, ref, durations)
        print(f"\nmodel {model}; {len(durations)} recordings, {audio_s / 3600:.2f} h; {len(ref)} reference events")
        print(f"detect: {result['n_detections']} detections in {wall:.0f} s wall (start-up included)")
        print(f"per class F1 (segments): {json.dumps(figures.pop('per_class'))}")
        lines += [
            f"{prefix}{k}={v:.3f}" if k != "false_per_hour" else f"{prefix}{k}={v:.2f}" for k, v in figures.items()
        ]
        lines.append(f"{prefix}rtf={audio_s / wall:.1f}")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
