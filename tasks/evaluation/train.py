"""The cross-validation plan: configurations (model x representation [+ copies]), each fitted fold by fold."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.cache import atomic_path, digest
from tasks.data.manifest import class_names, read_manifest
from tasks.data.split import load_splits
from tasks.evaluation.cv import fit_and_score
from tasks.evaluation.progress import Throttle, eta_text
from tasks.models import catalog


def run_name(model: str, features: str, augmented: bool, repeat: int | None = None) -> str:
    """The name a configuration carries everywhere (MLflow run, tables, ensembles)."""
    name = f"{model}/{features}{'+aug' if augmented else ''}"
    return f"{name}#{repeat}" if repeat is not None else name


def config_dir(spec: dict, inputs: dict, results_dir: str | Path) -> Path:
    """Where a configuration's fold results live: its name plus a digest of everything they depend on."""
    feat = spec["features"]
    aug_path = inputs["aug_features"].get(feat) if spec["augmented"] else None
    key = digest(
        spec,
        Path(inputs["features"][feat]).name,
        Path(aug_path).name if aug_path else None,
        Path(inputs["splits"]).read_text(),
    )
    return Path(results_dir) / f"{spec['name'].replace('/', '_')}-{key}"


def fit_fold(spec: dict, inputs: dict, fold: int, results_dir: str) -> dict:
    """Train one configuration on one fold and score its test rows; written to <config dir>/fold-<k>.npz.

    Pure of tracking: reads paths, writes files, returns small values. An existing fold file (same
    configuration, features, copies and splits) is reused, so an interrupted run resumes fold by fold."""
    out = config_dir(spec, inputs, results_dir)
    path = out / f"fold-{fold}.npz"
    if path.exists() and inputs.get("reuse", True):  # reuse_results=False (--no-reuse-results) retrains
        return {**_fold_info(path), "name": spec["name"], "fold": fold, "reused": True, "pid": os.getpid()}
    manifest = read_manifest(inputs["manifest"])
    y, groups = manifest["class_id"].to_numpy(), manifest["group"].astype(str).to_numpy()
    train, test = load_splits(inputs["splits"])[fold]
    feat = spec["features"]
    X = np.load(inputs["features"][feat], mmap_mode="r")
    aug_path = inputs["aug_features"].get(feat) if spec["augmented"] else None
    X_aug = None if aug_path is None else np.load(aug_path, mmap_mode="r")
    factory = catalog.make(spec["model"], seed=spec["seed"], n_jobs=spec.get("n_jobs", 1), hyper=spec.get("hyper"))
    res = fit_and_score(
        factory,
        X,
        y,
        groups,
        train,
        test,
        n_classes=len(class_names(manifest)),
        X_aug=X_aug,
        score_aug_test=spec.get("score_aug_test", False),
    )
    est = res["estimator"]
    history = getattr(est, "history_", None)
    if history is not None and fold == 0:  # the fold-0 network, logged with the configuration's run
        est.save(out / "fold0.keras")
        np.save(out / "fold0_example.npy", np.asarray(X[test[:2]]))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            test=test,
            proba=res["proba"],
            aug_proba=res["aug_proba"] if res["aug_proba"] is not None else np.zeros(0),
            fit_seconds=res["fit_seconds"],
            predict_seconds=res["predict_seconds"],
            history=json.dumps(history or {}),
        )
    return {**_fold_info(path), "name": spec["name"], "fold": fold, "reused": False, "pid": os.getpid()}


def _fold_info(path: Path) -> dict:
    with np.load(path) as z:
        return {"path": str(path), "fit_seconds": float(z["fit_seconds"]), "n_test": int(len(z["test"]))}


def assemble(fold_paths: list[str], n: int, n_classes: int, y: np.ndarray) -> tuple[np.ndarray, dict, list[dict]]:
    """Out-of-fold probabilities (n, C; NaN where never tested), timings and per-fold histories from fold files."""
    proba = np.full((n, n_classes), np.nan)
    cv = {"fit_seconds": [], "predict_seconds": [], "aug_test_accuracy": None}
    hits, histories = [], []
    for path in fold_paths:
        with np.load(path) as z:
            proba[z["test"]] = z["proba"]
            cv["fit_seconds"].append(float(z["fit_seconds"]))
            cv["predict_seconds"].append(float(z["predict_seconds"]))
            if z["aug_proba"].size:
                hits.append((z["aug_proba"].argmax(-1) == y[z["test"]][:, None]).ravel())
            histories.append(json.loads(str(z["history"])))
    if hits:
        cv["aug_test_accuracy"] = float(np.concatenate(hits).mean())
    return proba, cv, histories


def fold_outcome(future, spec: dict, fold: int) -> dict:
    """A fold task's result, or {"fold", "error"} if it failed (the configuration is then marked FAILED)."""
    try:
        return future.result()
    except Exception as exc:  # any failure of one fold: reported on its configuration, the others go on
        return {"name": spec["name"], "fold": fold, "error": f"{type(exc).__name__}: {exc}"}


# Per-epoch progress lines of deep models: at most one every this many seconds (and the last epoch).
EPOCH_LINE_EVERY_S = 20.0


def _epoch_progress(model: str, fn):
    """Per-epoch progress while a deep model trains (nothing for the others: they never import Keras)."""
    if not catalog.info(model).defaults:
        return contextlib.nullcontext()
    from tasks.models.keras_model import epoch_hook

    return epoch_hook(fn)


@task(cache_policy=NO_CACHE, task_run_name="fit {spec[name]} fold {fold}")
def fold_task(spec: dict, inputs: dict, fold: int, results_dir: str) -> dict:
    """One (configuration, fold) unit of parallel work (see fit_fold), with a line per epoch of deep models."""
    limit_threads(1)  # a no-op in the local pool (its initializer did it); a Dask worker's cap
    log, t0, throttle = get_run_logger(), time.perf_counter(), Throttle(EPOCH_LINE_EVERY_S)

    def on_epoch(epoch: int, epochs: int, logs: dict) -> None:
        if throttle(force=epoch == epochs):
            log.info(
                "%s: fold %d epoch %d/%d loss %.3f (%s for this fold)",
                spec["name"],
                fold + 1,
                epoch,
                epochs,
                logs.get("loss", float("nan")),
                eta_text(epoch / epochs, time.perf_counter() - t0),
            )

    with _epoch_progress(spec["model"], on_epoch):
        info = fit_fold(spec, inputs, fold, results_dir)
    log.info(
        "%s: fold %d %s (fit %.1f s)",
        spec["name"],
        fold + 1,
        "reused" if info["reused"] else "done",
        info["fit_seconds"],
    )
    return info


def drop_unavailable(specs: list[dict]) -> tuple[list[dict], list[str]]:
    """Configurations whose representation can be computed here, and a note for each representation left out
    (the pretrained embeddings need their optional extra)."""
    from tasks.features import pretrained

    why = pretrained.available()
    if why is None:
        return specs, []
    kept = [s for s in specs if s["features"] != "birdnet"]
    dropped = sorted({s["name"] for s in specs} - {s["name"] for s in kept})
    return kept, ([f"left out {', '.join(dropped)}: {why}"] if dropped else [])


_FAMILY_COST = {"cnn2d": 0, "cnn1d": 1, "mlp": 2, "classical": 3}


def longest_first(specs: list[dict]) -> list[dict]:
    """Specs in the order a worker pool finishes soonest: the expensive families (and augmented runs) first."""
    return sorted(specs, key=lambda s: (_FAMILY_COST.get(catalog.info(s["model"]).family, 9), not s["augmented"]))


def init_worker(n_workers: int) -> None:
    """Process-pool initializer: split the cores between the workers before TensorFlow starts.

    Two one-thread Keras trainings side by side finish sooner than the same two in turn on two threads
    each (bench/train.py)."""
    import os

    limit_threads(max(1, (os.cpu_count() or 1) // max(1, n_workers)))


def limit_threads(default: int) -> None:
    """Cap this process's TensorFlow and BLAS threads: at OMP_NUM_THREADS if something set it (a Dask nanny sets
    1), else at `default`. Runs in the local pool's initializer and again at the start of every fold task, so a
    Dask worker started without a nanny gets the same cap (too late for a TensorFlow already started there)."""
    import os

    threads = os.environ.get("OMP_NUM_THREADS") or str(default)
    for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's native log lines (see tasks/runtime.py)
    # The variables come too late for BLAS: unpickling the initializer (or the task) in the worker imported NumPy,
    # whose OpenBLAS sized its pool from the core count. Set it now: two workers x two spinning BLAS threads on 2
    # cores ran the logistic regression's small products 40x slower (12-25 s per ESC-10 fold against 0.3 s).
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas")


def plan(
    models: list[str],
    features: list[str],
    augmented: list[str],
    *,
    seed: int,
    repeats: dict[str, int],
    hyper: dict[str, dict],
    n_jobs: int = 1,
    score_aug_test: bool = False,
    augmentation: dict | None = None,
) -> list[dict]:
    """Every configuration to cross-validate: models x accepted features, plus the augmented variants asked for.

    A model entry "name/features" trains that model on those features only (e.g. "mlp_sklearn/engineered").
    """
    specs = []
    for entry in models:
        model, only = catalog.model_entry(entry)
        meta = catalog.info(model)
        feats = [only] if only else [f for f in features if f in meta.features] or list(meta.features[:1])
        for feat in feats:
            variants = [False]
            if model in augmented or f"{model}/{feat}" in augmented:
                variants = [True] if meta.family in ("cnn2d",) else [False, True]
            for aug in variants:
                n_rep = repeats.get(model, 1)
                for r in range(n_rep):
                    specs.append(
                        {
                            "name": run_name(model, feat, aug, r if n_rep > 1 else None),
                            "model": model,
                            "features": feat,
                            "augmented": aug,
                            "seed": seed + r,
                            "hyper": hyper.get(model, {}),
                            "n_jobs": n_jobs,
                            "score_aug_test": score_aug_test and aug,
                            "augmentation": augmentation if aug else None,
                        }
                    )
    return specs
