"""BirdNET embeddings on ESC-10: cost per clip, and 5-fold accuracy alone, beside and with the engineered vector.

    SOUNDFLOW_DATA=/tmp/x nice -n 10 python bench/pretrained.py                 # hop 1 s and 0.5 s
    python bench/pretrained.py --hops 0.5 --embed-sr 22050                       # embeddings from 22,050 Hz clips

ESC-10 is ingested with the current ingestion (tasks.ingest) at --embed-sr for the embeddings (default 44,100 Hz,
the files' own rate) and at 22,050 Hz for the engineered vector (the pipeline's working rate). One embedding pass
per hop gives both poolings (mean: B, mean and std over windows: B_ms). Features are cached under
$SOUNDFLOW_DATA/features: the clips/s figures are those of a run that found no cache (a reused file is reported as
such; the first hop's time includes TensorFlow's import). Models are cross-validated on the official folds with the
pipeline's CV engine and catalogue: logreg (C=0.1), rbf_svm (tuned inside the training folds, grouped by source),
optionally logreg_cv (C tuned the same way). Ensembles average the out-of-fold probabilities of members declared in
advance (nothing is fitted on test folds); the stacker figure is the pipeline's fold-safe stacker on the same
members. "quick cold" adds ingest + embeddings + engineered + the members' CV: a quick preset's cost without the
flow's own overhead. Ends with key=value lines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from tasks.config import SHARED_ESC10, stage_dir  # noqa: E402
from tasks.data.ingest import build  # noqa: E402
from tasks.data.manifest import read_manifest  # noqa: E402
from tasks.data.split import make_splits  # noqa: E402
from tasks.evaluation.cv import cross_validate  # noqa: E402
from tasks.evaluation.ensemble_cv import fold_safe_ensemble  # noqa: E402
from tasks.evaluation.ensembles import average  # noqa: E402
from tasks.features import pretrained  # noqa: E402
from tasks.features.representations import features_file  # noqa: E402
from tasks.models.classical import GroupedGridSearch, make_classical  # noqa: E402

WORKING_SR = 22050


def logreg_cv(seed: int) -> GroupedGridSearch:
    """Standardized logistic regression, C picked by 3 grouped inner folds of the training folds only."""
    inner = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=seed)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    return GroupedGridSearch(pipe, {"logisticregression__C": [0.003, 0.01, 0.03, 0.1, 1.0]}, cv=inner, n_jobs=2)


def model(name: str):
    """A zero-argument factory for the CV engine."""
    return (lambda: logreg_cv(0)) if name == "logreg_cv" else (lambda: make_classical(name, seed=0, n_jobs=2))


def ingest(sr: int) -> tuple[Path, "np.ndarray", "np.ndarray", list, float]:
    """(clips path, labels, source groups, official splits, seconds) of ESC-10 decoded at sr."""
    t0 = time.perf_counter()
    data = build(SHARED_ESC10, dataset="esc10", sr=sr, out_dir=stage_dir("interim"))
    clips_npy, manifest = data.clips, read_manifest(data.manifest)
    splits = make_splits(manifest, scheme="official")
    return (
        clips_npy,
        manifest["class_id"].to_numpy(),
        manifest["group"].astype(str).to_numpy(),
        splits,
        time.perf_counter() - t0,
    )


def features(clips_npy: Path, kind: str, sr: int, opts: dict) -> tuple[np.ndarray, float, bool]:
    """(features, seconds, reused from cache)."""
    out_dir = stage_dir("features")
    before = set(out_dir.glob(f"{kind}-*.npy"))
    t0 = time.perf_counter()
    path = features_file(clips_npy, kind, sr, opts, out_dir, n_jobs=2)
    return np.load(path), time.perf_counter() - t0, path in before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hops", type=float, nargs="+", default=[1.0, 0.5], help="window hops (s) to compare")
    ap.add_argument("--embed-sr", type=int, default=44100, help="rate the clips are decoded at for the embeddings")
    ap.add_argument("--models", nargs="+", default=["logreg", "rbf_svm"], help="also: logreg_cv")
    args = ap.parse_args()
    if (reason := pretrained.available()) is not None:
        sys.exit(f"bench/pretrained.py: {reason}")

    t_start = time.perf_counter()
    clips_e, y, groups, splits, ingest_e_s = ingest(args.embed_sr)
    clips_w, y_w, _, _, ingest_w_s = (
        (clips_e, y, None, None, 0.0) if args.embed_sr == WORKING_SR else ingest(WORKING_SR)
    )
    if not np.array_equal(y, y_w):
        sys.exit("bench/pretrained.py: the two ingests disagree on clip order")
    n, n_classes = len(y), int(y.max()) + 1
    print(
        f"ESC-10: {n} clips, {n_classes} classes, {len(splits)} official folds; ingest {ingest_e_s:.1f} s "
        f"at {args.embed_sr} Hz + {ingest_w_s:.1f} s at {WORKING_SR} Hz"
    )

    views, figures = {}, {}
    for hop in args.hops:
        # "mean_std" is the mean (first 1,024 values) and the std over windows: one pass gives both poolings
        X, secs, reused = features(clips_e, "birdnet", args.embed_sr, {"hop_s": hop, "pooling": "mean_std"})
        views[f"birdnet_h{hop:g}"], views[f"birdnet_h{hop:g}_ms"] = X[:, : pretrained.EMBEDDING_DIM], X
        figures[f"embed_h{hop:g}_s"] = secs
        print(
            f"birdnet hop {hop:g} s: {secs:.1f} s for {n} clips ({n / secs:.1f} clips/s)"
            f"{' (reused from cache)' if reused else ' (includes TensorFlow import and model load)' if hop == args.hops[0] else ''}"
        )
    X_eng, eng_s, reused = features(clips_w, "engineered", WORKING_SR, {})
    views["engineered"] = X_eng
    print(f"engineered: {eng_s:.1f} s{' (reused from cache)' if reused else ''}")
    for hop in args.hops:
        views[f"birdnet_h{hop:g}_ms+engineered"] = np.concatenate([views[f"birdnet_h{hop:g}_ms"], X_eng], axis=1)

    acc, proba, cv_s = {}, {}, {}
    print(f"\n{'representation':<28} {'model':<10} {'accuracy':>8} {'fold min':>8} {'CV s':>6}")
    for view, X in views.items():
        for name in args.models:
            t0 = time.perf_counter()
            # One BLAS thread: on shared cores OpenBLAS's spinning threads made logreg 15x slower (13 s vs 0.9 s a fit)
            with threadpool_limits(limits=1, user_api="blas"):
                out = cross_validate(model(name), X, y, splits, groups=groups, n_classes=n_classes)
            key = f"{name}/{view}"
            cv_s[key], proba[key] = time.perf_counter() - t0, out["proba"]
            acc[key] = float(np.mean(out["proba"].argmax(1) == y))
            folds = [np.mean(out["proba"][te].argmax(1) == y[te]) for _, te in splits]
            print(f"{view:<28} {name:<10} {100 * acc[key]:7.2f}% {100 * min(folds):7.1f}% {cv_s[key]:6.1f}")

    fold_of = np.empty(n, int)
    for k, (_, te) in enumerate(splits):
        fold_of[te] = k
    ens_acc = {}
    for hop in args.hops:
        b, e, c = f"birdnet_h{hop:g}_ms", "engineered", f"birdnet_h{hop:g}_ms+engineered"
        candidates = {  # declared before looking at these results (no search over member sets)
            f"avg(rbf_svm/B, logreg/B) h{hop:g}": [f"rbf_svm/{b}", f"logreg/{b}"],
            f"avg(rbf_svm/B, logreg/B, rbf_svm/E) h{hop:g}": [f"rbf_svm/{b}", f"logreg/{b}", f"rbf_svm/{e}"],
            f"avg(rbf_svm/B, rbf_svm/E) h{hop:g}": [f"rbf_svm/{b}", f"rbf_svm/{e}"],
            f"avg(rbf_svm/B+E, logreg/B+E) h{hop:g}": [f"rbf_svm/{c}", f"logreg/{c}"],
        }
        print(f"\nensembles (B = birdnet hop {hop:g} s mean+std, E = engineered), out-of-fold probabilities:")
        for label, members in candidates.items():
            if not all(m in proba for m in members):
                continue
            P = np.stack([proba[m] for m in members])
            avg = float(np.mean(average(P).argmax(1) == y))
            splits = [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in np.unique(fold_of)]
            probas = {m: proba[m] for m in members}
            res = fold_safe_ensemble(
                probas,
                {m: m for m in members},
                y,
                splits,
                combiner="stacking",
                n_members=len(members),
                method="jaya",
                seed=0,
                fixed_members=members,
            )
            stack = float(np.mean(res["proba"].argmax(1) == y))
            ens_acc[label] = avg
            quick_s = ingest_e_s + ingest_w_s + figures[f"embed_h{hop:g}_s"] + eng_s + sum(cv_s[m] for m in members)
            print(
                f"  {label:<42} average {100 * avg:6.2f}%  (stacker {100 * stack:6.2f}%)  quick cold ~{quick_s:5.0f} s"
            )
            figures[f"quick_s[{label}]"] = quick_s

    single = {k: v for k, v in acc.items()}
    best_single = max(single, key=single.get)
    best_ens = max(ens_acc, key=ens_acc.get) if ens_acc else None
    concat = {k: v for k, v in acc.items() if "+engineered" in k}
    print(f"\ntotal bench time {time.perf_counter() - t_start:.0f} s")
    for h in args.hops:
        print(f"clips_per_s_h{h:g}={n / figures[f'embed_h{h:g}_s']:.2f}")
    print(f"clips_per_s={n / figures[f'embed_h{args.hops[0]:g}_s']:.2f}  # hop {args.hops[0]:g} s, cold process")
    print(f"engineered_s={eng_s:.1f}")
    for h in args.hops:
        for name in args.models:
            print(f"acc_{name}_h{h:g}={acc[f'{name}/birdnet_h{h:g}']:.4f}")
    b = f"birdnet_h{args.hops[0]:g}"
    print(f"acc_logreg={acc.get(f'logreg/{b}', float('nan')):.4f}  # {b}, mean pooling")
    print(f"acc_svm={acc.get(f'rbf_svm/{b}', float('nan')):.4f}  # {b}, mean pooling")
    print(f"acc_engineered_svm={acc.get('rbf_svm/engineered', float('nan')):.4f}")
    if concat:
        best_concat = max(concat, key=concat.get)
        print(f"acc_concat_best={concat[best_concat]:.4f}  # {best_concat}")
    print(f"acc_best_single={single[best_single]:.4f}  # {best_single}")
    if best_ens:
        print(f"acc_best_ensemble={ens_acc[best_ens]:.4f}  # {best_ens}")
        print(f"quick_cold_s={figures[f'quick_s[{best_ens}]']:.0f}  # {best_ens}, estimate without flow overhead")


if __name__ == "__main__":
    main()
