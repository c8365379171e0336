"""What each part of the engineered vector buys: 5-fold accuracy of classical models on its parts.

    python bench/engineered.py                   # rbf_svm and logreg, official ESC-10 folds
    python bench/engineered.py --models rbf_svm linear_svm_c0.01 rf500

The vector is Piczak-style frame statistics (186) + log-mel band statistics (640) + modulation spectrum
(384), see tasks/features/representations.py. Each model is cross-validated on the official folds (original clips, no
augmentation) on: the Piczak part alone, Piczak + bands, Piczak + modulation, and all of it. The rbf_svm
is tuned inside the training folds (grouped by Freesound source). Ends with key=value lines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train import SR, list_clips  # noqa: E402
from tasks.config import SHARED_ESC10  # noqa: E402
from tasks.data.audio import load_audio  # noqa: E402
from tasks.evaluation.cv import predict_proba  # noqa: E402
from tasks.features.representations import compute  # noqa: E402
from tasks.models.classical import make_classical  # noqa: E402

PARTS = {"piczak": slice(0, 186), "bands": slice(186, 826), "modulation": slice(826, 1210)}
SETS = {
    "piczak": ["piczak"],
    "piczak_bands": ["piczak", "bands"],
    "piczak_modulation": ["piczak", "modulation"],
    "modulation": ["modulation"],
    "all": ["piczak", "bands", "modulation"],
}


def cross_validate(name: str, X: np.ndarray, y: np.ndarray, folds: np.ndarray, groups: np.ndarray) -> float:
    """Mean accuracy over the official folds (each fold's test clips scored by a model fit on the others)."""
    hits = np.zeros(len(y), bool)
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        est = make_classical(name, seed=0, n_jobs=2)
        est.fit(X[train], y[train], **({"groups": groups[train]} if name == "rbf_svm" else {}))
        hits[test] = predict_proba(est, X[test], int(y.max()) + 1).argmax(1) == y[test]
    return float(hits.mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["rbf_svm", "logreg"])
    args = ap.parse_args()
    paths, y, folds, sources = list_clips(SHARED_ESC10)
    clips = np.stack([load_audio(p, sr=SR) for p in paths])
    start = time.perf_counter()
    X = compute("engineered", clips, SR, n_jobs=2)
    seconds = time.perf_counter() - start
    if X.shape[1] != PARTS["modulation"].stop:
        raise SystemExit(
            f"engineered vector has {X.shape[1]} values; update PARTS to its layout (tasks/features/representations.py)"
        )
    print(f"engineered {X.shape} in {seconds:.1f}s ({len(clips) / seconds:.0f} clips/s on 2 threads)", flush=True)
    results = {}
    for name in args.models:
        for label, parts in SETS.items():
            cols = np.concatenate([np.arange(X.shape[1])[PARTS[p]] for p in parts])
            results[f"{name}_{label}"] = acc = cross_validate(name, X[:, cols], y, folds, sources)
            print(f"{name:18s} {label:18s} ({len(cols):4d} values) accuracy={acc:.4f}", flush=True)
    for key, acc in results.items():
        print(f"accuracy_{key}={acc:.4f}")
    for name in args.models:
        print(f"gain_points_{name}={100 * (results[f'{name}_all'] - results[f'{name}_piczak']):.2f}")
    print(f"clips_per_s={len(clips) / seconds:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
