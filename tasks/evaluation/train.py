"""The cross-validation plan: configurations (model x representation [+ copies]), each fitted fold by fold."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.cache import atomic_path, digest
from tasks.data.manifest import class_names, read_manifest
from tasks.data.split import load_splits
from tasks.evaluation.cv import fit_and_score
from tasks.evaluation.progress import Throttle, eta_text
from tasks.models import catalog
from tasks.records import AugmentParams, Config, CVInputs, FoldResult
from tasks.runtime import limit_threads


def config_dir(config: Config, inputs: CVInputs, results_dir: str | Path) -> Path:
    """Where a configuration's fold results live: its name plus a digest of everything they depend on."""
    features, aug_path = inputs.features_of(config)
    key = digest(
        config.key(),
        Path(features).name,
        Path(aug_path).name if aug_path else None,
        Path(inputs.splits).read_text(),
    )
    return Path(results_dir) / f"{config.name.replace('/', '_')}-{key}"


def fit_fold(config: Config, inputs: CVInputs, fold: int, results_dir: str) -> FoldResult:
    """Train one configuration on one fold and score its test rows; written to <config dir>/fold-<k>.npz.

    Pure of tracking: reads paths, writes files, returns small values. An existing fold file (same
    configuration, features, copies and splits) is reused, so an interrupted run resumes fold by fold."""
    out = config_dir(config, inputs, results_dir)
    path = out / f"fold-{fold}.npz"
    if (done := cached_fold(config, inputs, fold, results_dir)) is not None:
        return done
    manifest = read_manifest(inputs.manifest)
    y, groups = manifest["class_id"].to_numpy(), manifest["group"].astype(str).to_numpy()
    train, test = load_splits(inputs.splits)[fold]
    features, aug_path = inputs.features_of(config)
    X = np.load(features, mmap_mode="r")
    X_aug = None if aug_path is None else np.load(aug_path, mmap_mode="r")
    factory = catalog.make(config.model, seed=config.seed, n_jobs=config.n_jobs, hyper=dict(config.hyper))
    res = fit_and_score(
        factory,
        X,
        y,
        groups,
        train,
        test,
        n_classes=len(class_names(manifest)),
        X_aug=X_aug,
        score_aug_test=config.score_aug_test,
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
    return _fold_result(path, config, fold, reused=False)


def cached_fold(config: Config, inputs: CVInputs, fold: int, results_dir: str) -> FoldResult | None:
    """The fold's earlier result if its file exists (same configuration, features, copies and splits) and results
    may be reused (reuse_results=False, --no-reuse-results, retrains); else None."""
    path = config_dir(config, inputs, results_dir) / f"fold-{fold}.npz"
    return _fold_result(path, config, fold, reused=True) if inputs.reuse and path.exists() else None


@task(cache_policy=NO_CACHE)
def reused_folds_task(
    configs: list[Config], inputs: CVInputs, k: int, results_dir: str
) -> dict[tuple[str, int], FoldResult]:
    """The (configuration, fold) units done by an earlier run, read in this process: a warm re-run starts no worker
    (each would import TensorFlow) and runs no task per fold."""
    found = {}
    for config in configs:
        for fold in range(k):
            if (done := cached_fold(config, inputs, fold, results_dir)) is not None:
                found[(config.name, fold)] = done
    if found:
        get_run_logger().info(
            "cross-validation: %d of %d folds reused from %s", len(found), len(configs) * k, results_dir
        )
    return found


def _fold_result(path: Path, config: Config, fold: int, *, reused: bool) -> FoldResult:
    with np.load(path) as z:
        fit_seconds, n_test = float(z["fit_seconds"]), int(len(z["test"]))
    return FoldResult(
        config.name, fold, str(path), fit_seconds=fit_seconds, n_test=n_test, reused=reused, pid=os.getpid()
    )


def assemble(fold_paths: list[str], n: int, n_classes: int, y: np.ndarray) -> tuple[np.ndarray, dict, list[dict]]:
    """Out-of-fold probabilities (n, C; NaN where never tested), timings and per-fold histories from fold files."""
    proba = np.full((n, n_classes), np.nan)
    cv: dict[str, Any] = {"fit_seconds": [], "predict_seconds": [], "aug_test_accuracy": None}
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


def fold_outcome(future, config: Config, fold: int) -> FoldResult:
    """A fold task's result, or one carrying the error if it failed (the configuration is then marked FAILED)."""
    try:
        return future.result()
    except Exception as exc:  # any failure of one fold: reported on its configuration, the others go on
        return FoldResult(config.name, fold, error=f"{type(exc).__name__}: {exc}")


# Per-epoch progress lines of deep models: at most one every this many seconds (and the last epoch).
EPOCH_LINE_EVERY_S = 20.0


def _epoch_progress(model: str, fn):
    """Per-epoch progress while a deep model trains (nothing for the others: they never import Keras)."""
    if not catalog.info(model).defaults:
        return contextlib.nullcontext()
    from tasks.models.keras_model import epoch_hook

    return epoch_hook(fn)


@task(cache_policy=NO_CACHE, task_run_name="fit {config.name} fold {fold}")
def fold_task(config: Config, inputs: CVInputs, fold: int, results_dir: str) -> FoldResult:
    """One (configuration, fold) unit of parallel work (see fit_fold), with a line per epoch of deep models."""
    limit_threads(1)  # a no-op in the local pool (its initializer did it); a Dask worker's cap
    log, t0, throttle = get_run_logger(), time.perf_counter(), Throttle(EPOCH_LINE_EVERY_S)

    def on_epoch(epoch: int, epochs: int, logs: dict) -> None:
        if throttle(force=epoch == epochs):
            log.info(
                "%s: fold %d epoch %d/%d loss %.3f (%s for this fold)",
                config.name,
                fold + 1,
                epoch,
                epochs,
                logs.get("loss", float("nan")),
                eta_text(epoch / epochs, time.perf_counter() - t0),
            )

    with _epoch_progress(config.model, on_epoch):
        info = fit_fold(config, inputs, fold, results_dir)
    log.info(
        "%s: fold %d %s (fit %.1f s)", config.name, fold + 1, "reused" if info.reused else "done", info.fit_seconds
    )
    return info


def drop_unavailable(configs: list[Config]) -> tuple[list[Config], list[str]]:
    """Configurations whose representation can be computed here, and a note for each representation left out
    (the pretrained embeddings need their optional extra)."""
    from tasks.features import pretrained

    why = pretrained.available()
    if why is None:
        return configs, []
    kept = [c for c in configs if c.features != "birdnet"]
    dropped = sorted({c.name for c in configs} - {c.name for c in kept})
    return kept, ([f"left out {', '.join(dropped)}: {why}"] if dropped else [])


_FAMILY_COST = {"cnn2d": 0, "cnn1d": 1, "mlp": 2, "classical": 3}


def longest_first(configs: list[Config]) -> list[Config]:
    """Configurations in the order a worker pool finishes soonest: the expensive families (and augmented) first."""
    return sorted(configs, key=lambda c: (_FAMILY_COST.get(c.family, 9), not c.augmented))


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
    augmentation: AugmentParams | None = None,
) -> list[Config]:
    """Every configuration to cross-validate: models x accepted features, plus the augmented variants asked for.

    A model entry "name/features" trains that model on those features only (e.g. "mlp_sklearn/engineered").
    """
    configs = []
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
                    configs.append(
                        Config(
                            model=model,
                            features=feat,
                            family=meta.family,
                            augmented=aug,
                            seed=seed + r,
                            repeat=r if n_rep > 1 else None,
                            hyper=hyper.get(model, {}),
                            n_jobs=n_jobs,
                            score_aug_test=score_aug_test and aug,
                            augmentation=augmentation if aug else None,
                        )
                    )
    return configs


@task(cache_policy=NO_CACHE)
def plan_task(
    models: list[str],
    features: list[str],
    augmented: list[str],
    *,
    seed: int,
    repeats: dict[str, int],
    hyper: dict[str, dict],
    score_aug_test: bool,
    augmentation: AugmentParams,
) -> list[Config]:
    """The configurations to cross-validate that can run here, longest first; a warning for each left out."""
    configs = plan(
        models,
        features,
        augmented,
        seed=seed,
        repeats=repeats,
        hyper=hyper,
        score_aug_test=score_aug_test,
        augmentation=augmentation,
    )
    configs, notes = drop_unavailable(configs)
    for note in notes:
        get_run_logger().warning("%s", note)
    return longest_first(configs)
