"""Short clips in 5-s windows vs `--window-s auto`: accuracy on the same speaker-grouped folds.

    python bench/windows.py                  # 600 generated word-like clips of 0.2-1.5 s, 10 classes, 6 speakers

A generated spoken-digit-like dataset (the folders layout, the speaker in the file name): each class is a
formant pattern over a harmonic voice, each speaker its own pitch, each clip its own length (0.2-1.5 s at 8 kHz,
with a little silence around the sound). Ingested twice, the pipeline's way (tasks/data/ingest.py), with 5-s
windows and with the automatic window; engineered vectors (tasks/features); logistic regression and the tuned
RBF SVM cross-validated on the same StratifiedGroupKFold folds over speakers. Ends with key=value lines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.data.ingest import build  # noqa: E402
from tasks.data.manifest import read_manifest  # noqa: E402
from tasks.data.split import make_splits  # noqa: E402
from tasks.evaluation.cv import predict_proba  # noqa: E402
from tasks.features.representations import compute  # noqa: E402
from tasks.models.classical import make_classical  # noqa: E402

SR_FILES = 8000
SR = 22050  # the pipeline's default working rate


def word(cls: int, speaker: int, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced 'word': harmonics of the speaker's pitch shaped by two formants that move as the class says."""
    t = np.arange(round(SR_FILES * duration_s)) / SR_FILES
    f0 = (110 + 25 * speaker) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR_FILES
    shape = np.linspace(0, 1, len(t))
    f1 = 300 + 60 * cls + 250 * np.sin(np.pi * shape * (1 + cls % 3))
    f2 = 900 + 150 * cls + 300 * shape * (1 if cls % 2 else -1)
    y = np.zeros_like(t)
    for h in range(1, 25):
        fh = h * f0
        gain = np.exp(-(((fh - f1) / 120) ** 2)) + 0.6 * np.exp(-(((fh - f2) / 180) ** 2)) + 0.02
        y += gain * np.sin(h * phase) * (fh < SR_FILES / 2)
    y *= np.hanning(len(t)) ** 0.5
    pad = np.zeros(round(SR_FILES * rng.uniform(0.02, 0.1)))
    out = np.concatenate([pad, y, pad]) + 0.003 * rng.standard_normal(2 * len(pad) + len(y))
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def make_dataset(root: Path, *, per_cell: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for cls in range(10):
        (root / str(cls)).mkdir(parents=True, exist_ok=True)
        for speaker in range(6):
            for i in range(per_cell):
                y = word(cls, speaker, rng.uniform(0.2, 1.5), rng)
                sf.write(root / str(cls) / f"spk{speaker}_{i}.wav", y, SR_FILES)


def cross_validate(name: str, X: np.ndarray, y: np.ndarray, splits, groups: np.ndarray) -> float:
    hits = np.zeros(len(y), bool)
    for train, test in splits:
        est = make_classical(name, seed=0, n_jobs=2)
        est.fit(X[train], y[train], **({"groups": groups[train]} if name == "rbf_svm" else {}))
        hits[test] = predict_proba(est, X[test], int(y.max()) + 1).argmax(1) == y[test]
    return float(hits.mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-cell", type=int, default=10, help="clips per (class, speaker)")
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="soundflow-windows-") as tmp:
        root = Path(tmp) / "digits"
        make_dataset(root, per_cell=args.per_cell, seed=0)
        for tag, window in (("5s", 5.0), ("auto", "auto")):
            t0 = time.perf_counter()
            data = build(root, group_pattern=r"^(spk\d+)_", sr=SR, window_s=window, out_dir=Path(tmp) / tag, n_jobs=2)
            m = read_manifest(data.manifest)
            clips = np.load(data.clips)
            X = compute("engineered", clips, SR, n_jobs=2)
            y, groups = m["class_id"].to_numpy(), m["group"].astype(str).to_numpy()
            splits = make_splits(m, scheme="group_kfold", k=args.k, seed=0)
            out[f"window_s_{tag}"] = float(data.window_s)
            out[f"padding_share_{tag}"] = float((clips == 0).mean())
            for name in ("logreg", "rbf_svm"):
                out[f"{name}_accuracy_{tag}"] = 100 * cross_validate(name, X, y, splits, groups)
            out[f"seconds_{tag}"] = time.perf_counter() - t0
            print(
                f"{tag}: window {data['window_s']:g} s, {len(m)} rows, {out[f'padding_share_{tag}']:.0%} zeros, "
                f"logreg {out[f'logreg_accuracy_{tag}']:.1f}%, rbf_svm {out[f'rbf_svm_accuracy_{tag}']:.1f}%"
            )
    for key, value in out.items():
        print(f"{key}={value:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
