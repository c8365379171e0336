"""Time the case study's stages on the real ESC-10 (cold, then warm from the caches), in one process.

Usage: .venv/bin/python bench/pipeline.py [--source ../shared/datasets/esc10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from tasks.config import SHARED_ESC10

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", default=str(SHARED_ESC10))
    ap.add_argument("--models", default="gaussian_nb,rf1000,rbf_svm,logreg,mlp_sklearn")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soundflow-bench-"))
    os.environ["SOUNDFLOW_DATA"] = str(tmp / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"

    import numpy as np
    from prefect.logging import disable_run_logger

    from tasks.data.ingest import build
    from tasks.data.manifest import read_manifest
    from tasks.data.split import make_splits
    from tasks.evaluation.cv import cross_validate
    from tasks.features.representations import features_file
    from tasks.models.classical import make_classical

    out: dict[str, float] = {}

    def timed(key, fn):
        t0 = time.perf_counter()
        result = fn()
        out[key] = time.perf_counter() - t0
        print(f"{key}: {out[key]:.2f} s", flush=True)
        return result

    interim, feats = tmp / "data" / "interim", tmp / "data" / "features"
    with disable_run_logger():
        data = timed("ingest_cold_s", lambda: build(Path(args.source), dataset="esc10", sr=22050, out_dir=interim))
        timed("ingest_warm_s", lambda: build(Path(args.source), dataset="esc10", sr=22050, out_dir=interim))
        man, clips = data.manifest, data.clips
        paths = {}
        for kind in ("raw", "engineered"):
            paths[kind] = timed(
                f"features_{kind}_cold_s", lambda kind=kind: features_file(clips, kind, 22050, {}, feats)
            )
            timed(f"features_{kind}_warm_s", lambda kind=kind: features_file(clips, kind, 22050, {}, feats))
    m = read_manifest(man)
    y, groups = m["class_id"].to_numpy(), m["group"].to_numpy()
    splits = make_splits(m, scheme="official")
    for model in args.models.split(","):
        for kind in ("raw", "engineered"):
            X = np.load(paths[kind])
            res = timed(
                f"cv_{model}_{kind}_s",
                lambda model=model, X=X: cross_validate(
                    lambda: make_classical(model, seed=0, n_jobs=2), X, y, splits, groups=groups, n_classes=10
                ),
            )
            out[f"acc_{model}_{kind}"] = float(np.mean(res["proba"].argmax(1) == y))
    cold = out["ingest_cold_s"] + out["features_raw_cold_s"] + out["features_engineered_cold_s"]
    warm = out["ingest_warm_s"] + out["features_raw_warm_s"] + out["features_engineered_warm_s"]
    print()
    for key, value in out.items():
        print(f"{key}={value:.3f}")
    print(f"prep_cold_s={cold:.2f}")
    print(f"prep_warm_s={warm:.2f}")
    print(f"ratio={cold / max(warm, 1e-9):.1f}")


if __name__ == "__main__":
    main()
