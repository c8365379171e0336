"""The champion's training: its members refitted on every clip (side by side, as in CV) and its combiner fitted on
their out-of-fold probabilities. Pure of tracking: estimators in, estimators out."""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.manifest import read_manifest
from tasks.evaluation.ensembles import Combiner
from tasks.evaluation.train import longest_first
from tasks.models import catalog
from tasks.models import rows as rowsets
from tasks.models.persist import load_estimator, save_estimator
from tasks.records import Config, ConfigResult, CVInputs, EnsembleResult, Result
from tasks.runtime import init_worker


def members_of(best: Result) -> list[ConfigResult]:
    """The results to refit: the ensemble's final members (chosen on all out-of-fold rows), or the model itself."""
    if isinstance(best, EnsembleResult):
        if not best.final_members:
            raise ValueError(f"{best.name}: an ensemble result without final members")
        return list(best.final_members)
    return [best]


def refit_full(config: Config, inputs: CVInputs, *, n_jobs: int = 1) -> Any:
    """Fit `config` (model, seed, hyper) on all clips (+ their augmented copies if it trains with them)."""
    manifest = read_manifest(inputs.manifest)
    y = manifest["class_id"].to_numpy()
    groups = manifest["group"].astype(str).to_numpy()
    features, aug_path = inputs.features_of(config)
    X = np.load(features, mmap_mode="r")
    X_aug = None if aug_path is None else np.load(aug_path, mmap_mode="r")
    rows, yt, gt = rowsets.training_rows(X, y, groups, np.arange(len(y)), X_aug)
    est = catalog.make(config.model, seed=config.seed, n_jobs=n_jobs, hyper=dict(config.hyper))()
    return rowsets.fit(est, rows, yt, gt)


def _refit_saved(config: Config, inputs: CVInputs, folder: str) -> dict:
    """refit_full in a worker process; the estimator goes to `folder` (its own format), the format comes back."""
    t0 = time.perf_counter()
    fmt, cls = save_estimator(refit_full(config, inputs), Path(folder))
    return {"estimator_format": fmt, "estimator_class": cls, "seconds": time.perf_counter() - t0}


def refit_members(configs: list[Config], inputs: CVInputs, *, n_jobs: int, log) -> list:
    """Every member refitted on all clips, in the order given: side by side in up to n_jobs worker processes (the
    cores split between them as in CV), the longest first, with a log line as each one finishes."""
    workers = max(1, min(int(n_jobs), len(configs)))
    log.info("champion: refitting %d member(s) on every clip, %d at a time", len(configs), workers)
    if workers == 1:
        estimators = []
        for i, config in enumerate(configs, 1):
            t0 = time.perf_counter()
            estimators.append(refit_full(config, inputs, n_jobs=int(n_jobs)))
            log.info(
                "champion: member %d/%d %s refitted (%.0f s)", i, len(configs), config.name, time.perf_counter() - t0
            )
        return estimators
    first = longest_first(configs)
    with tempfile.TemporaryDirectory(prefix="soundflow-refit-") as tmp:
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker, initargs=(workers,)
        ) as pool:
            futures = {
                pool.submit(_refit_saved, configs[i], inputs, str(Path(tmp) / str(i))): i
                for i in sorted(range(len(configs)), key=lambda i: first.index(configs[i]))
            }
            saved: dict[int, dict] = {}
            for done, future in enumerate(as_completed(futures), 1):
                i = futures[future]
                saved[i] = future.result()
                log.info(
                    "champion: member %d/%d %s refitted (%.0f s)",
                    done,
                    len(configs),
                    configs[i].name,
                    saved[i]["seconds"],
                )
        return [load_estimator(Path(tmp) / str(i), saved[i]) for i in range(len(configs))]


def fit_combiner(best: Result, manifest_path: str) -> Combiner | None:
    """An ensemble's combiner fitted on its members' out-of-fold probabilities of all folds (None for one model).

    Weighted: weights searched as CV searches them per fold; stacking: the Stacker on every out-of-fold row."""
    if not isinstance(best, EnsembleResult):
        return None
    y = read_manifest(manifest_path)["class_id"].to_numpy()
    P = np.stack([np.load(m.proba) for m in best.final_members])
    scored = ~np.isnan(P[..., 0]).any(axis=0)
    if best.combiner in ("weighted", "stacking", "logpool") and not scored.any():
        raise ValueError(f"{best.name}: no out-of-fold predictions to fit the {best.combiner} combiner on")
    return Combiner(best.combiner, method=best.optimizer, seed=best.seed).fit(P[:, scored], y[scored])
