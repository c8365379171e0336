"""Which ensemble pool of clip-vector models to ship, judged away from ESC-10's official folds.

    SOUNDFLOW_DATA=/tmp/pools nice -n 10 python bench/pools.py            # official folds + 3 grouped 5-fold splits

The pipeline's ESC-10 figures are scored on the official folds, so choosing a preset by those same folds would
select on the test data. Here every candidate is also cross-validated on `--repeats` other splits (the pipeline's
StratifiedGroupKFold by source recording, seeds 1, 2, ...), and the choice is made by their mean.

Candidates: the RBF SVM and the logistic regression on BirdNET embeddings (hop 0.5 s, mean and std, from the source
audio at 48 kHz as the flow computes them), the same two also trained on the embeddings of the default preset's two
mild pitch/stretch copies per training clip (+aug), and both on the engineered vector. Pools: "no copies" (the quick
preset's four) and "with copies" (all six). Each pool's ensembles are the pipeline's own fold-safe ones
(tasks/evaluation/ensemble_cv.py: members and weights chosen per fold on the other folds). Ends with key=value lines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from threadpoolctl import threadpool_limits  # noqa: E402

from flows.params import DEFAULT, QUICK  # noqa: E402
from tasks.augment.copies import AugmentParams, augment_file, manifest_clip_keys  # noqa: E402
from tasks.config import SHARED_ESC10, stage_dir  # noqa: E402
from tasks.data.ingest import build  # noqa: E402
from tasks.data.manifest import read_manifest  # noqa: E402
from tasks.data.split import make_splits  # noqa: E402
from tasks.evaluation.cv import cross_validate  # noqa: E402
from tasks.evaluation.ensemble_cv import fold_safe_ensemble  # noqa: E402
from tasks.features import pretrained  # noqa: E402
from tasks.features.representations import features_file  # noqa: E402
from tasks.models.classical import make_classical  # noqa: E402

SR = 22050
COMBINERS = ("average", "vote", "weighted", "stacking", "logpool")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="grouped 5-fold splits beside the official folds")
    ap.add_argument("--members", type=int, nargs="+", default=[3, 4], help="ensemble sizes")
    args = ap.parse_args()
    if (reason := pretrained.available()) is not None:
        sys.exit(f"bench/pools.py: {reason}")
    t_start = time.perf_counter()
    data = build(SHARED_ESC10, dataset="esc10", sr=SR, out_dir=stage_dir("interim"))
    manifest = read_manifest(data.manifest)
    y, groups = manifest["class_id"].to_numpy(), manifest["group"].astype(str).to_numpy()
    n_classes = int(y.max()) + 1
    feats = stage_dir("features")
    opts = DEFAULT["feature_opts"]["birdnet"]
    assert opts == QUICK["feature_opts"]["birdnet"]
    t0 = time.perf_counter()
    B = np.load(features_file(Path(data.clips), "birdnet", SR, opts, feats, manifest_path=data.manifest))
    embed_s = time.perf_counter() - t0
    E = np.load(features_file(Path(data.clips), "engineered", SR, {}, feats))
    t0 = time.perf_counter()
    copies = augment_file(
        data.clips,
        SR,
        AugmentParams(**DEFAULT["augmentation"]),
        0,
        manifest_clip_keys(data.manifest),
        stage_dir("interim"),
        n_jobs=2,
    )
    BA = np.load(features_file(Path(copies), "birdnet", SR, opts, feats))
    copies_s = time.perf_counter() - t0
    print(
        f"embeddings {embed_s:.0f} s (400 clips), copies + their embeddings {copies_s:.0f} s ({BA.shape[1]} per clip)"
    )

    splits = {"official": make_splits(manifest, scheme="official")}
    for s in range(1, args.repeats + 1):
        splits[f"group{s}"] = make_splits(manifest, scheme="group_kfold", k=5, seed=s)
    configs = {
        "rbf_svm/birdnet": ("rbf_svm", B, None),
        "logreg/birdnet": ("logreg", B, None),
        "rbf_svm/birdnet+aug": ("rbf_svm", B, BA),
        "logreg/birdnet+aug": ("logreg", B, BA),
        "rbf_svm/engineered": ("rbf_svm", E, None),
        "logreg/engineered": ("logreg", E, None),
    }
    pools = {
        "no_copies": [c for c in configs if "+aug" not in c],
        "with_copies": list(configs),
    }
    acc: dict[str, dict[str, float]] = {}
    for split_name, sp in splits.items():
        proba = {}
        for name, (model, X, X_aug) in configs.items():
            with threadpool_limits(limits=1, user_api="blas"):
                out = cross_validate(
                    lambda m=model: make_classical(m, seed=0, n_jobs=2),
                    X,
                    y,
                    sp,
                    groups=groups,
                    n_classes=n_classes,
                    X_aug=X_aug,
                )
            proba[name] = out["proba"]
            acc.setdefault(name, {})[split_name] = float(np.mean(out["proba"].argmax(1) == y))
        for pool, members in pools.items():
            probas = {m: proba[m] for m in members}
            view = {m: m.split("/")[1].removesuffix("+aug") for m in members}
            family = {m: "classical" for m in members}
            for combiner in COMBINERS:
                for n in args.members:
                    res = fold_safe_ensemble(
                        probas, family, y, sp, combiner=combiner, n_members=n, method="jaya", seed=0, view=view
                    )
                    key = f"{pool}:{combiner}{n}"
                    acc.setdefault(key, {})[split_name] = float(np.mean(res["proba"].argmax(1) == y))
        print(f"{split_name}: done at {time.perf_counter() - t_start:.0f} s", flush=True)

    others = [s for s in splits if s != "official"]
    print(f"\n{'configuration':<28} {'official':>8} " + " ".join(f"{s:>7}" for s in others) + f" {'mean':>7}")
    mean_other = {}
    for key, row in acc.items():
        mean_other[key] = float(np.mean([row[s] for s in others]))
        cells = " ".join(f"{100 * row[s]:7.2f}" for s in others)
        print(f"{key:<28} {100 * row['official']:8.2f} {cells} {100 * mean_other[key]:7.2f}")
    best = {p: max((k for k in acc if k.startswith(p + ":")), key=lambda k: mean_other[k]) for p in pools}
    single = max((k for k in configs), key=lambda k: mean_other[k])
    print(f"\ntotal bench time {time.perf_counter() - t_start:.0f} s")
    print(f"copies_embed_s={copies_s:.0f}")
    for label, key in {"single": single, **best}.items():
        print(f"best_{label}={key}")
        print(f"best_{label}_other_splits_mean={mean_other[key]:.4f}")
        print(f"best_{label}_official={acc[key]['official']:.4f}")


if __name__ == "__main__":
    main()
