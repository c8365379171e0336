"""Ensembles inside the case study: members and weights chosen per fold from the other folds only."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np

from tasks.data.manifest import class_names, pooling, read_manifest
from tasks.data.split import load_splits
from tasks.evaluation.ensembles import (
    COMBINERS,
    Combiner,
    EnsembleError,
    average,
    maximum,
    optimistic_weights,
    vote,
)
from tasks.evaluation.metrics import cv_summary, scalar_metrics
from tasks.records import ConfigResult

FIXED = {"average": average, "maximum": maximum, "vote": vote}


def select_members(
    acc: dict[str, float],
    family: dict[str, str],
    n: int,
    loss: dict[str, float] | None = None,
    view: dict[str, str] | None = None,
) -> list[str]:
    """n configurations: the best of each input representation (`view`) first, then the best of each model
    family, then the next best overall; within each stage by accuracy.

    Models that see a clip differently make different mistakes (README, "What made the difference"), so views
    come before families. Equal accuracies (one clip apart is common on small datasets) go to the lower log
    loss, then to the name: the choice never depends on the order in which results arrived.
    """
    loss = loss or {}
    ranked = sorted(acc, key=lambda name: (-acc[name], loss.get(name, 0.0), name))
    chosen: list[str] = []
    for groups in filter(None, (view, family)):
        best = [next(name for name in ranked if groups[name] == g) for g in dict.fromkeys(groups[m] for m in ranked)]
        chosen += [name for name in best if name not in chosen]
    chosen += [name for name in ranked if name not in chosen]
    return chosen[:n]


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)))) if len(y) else 0.0


def combine(combiner: str, P_train, y_train, P_test, *, method: str, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Fit `combiner` on training-fold probabilities (if it has anything to fit) and apply it to the test fold."""
    if combiner in FIXED:
        return FIXED[combiner](P_test), None
    fitted = Combiner(combiner, method=method, seed=seed).fit(P_train, y_train)
    return fitted.predict_proba(P_test), fitted.weights_


def fold_safe_ensemble(
    probas: dict[str, np.ndarray],
    family: dict[str, str],
    y: np.ndarray,
    splits,
    *,
    combiner: str,
    n_members: int,
    method: str,
    seed: int,
    fixed_members: list[str] | None = None,
    view: dict[str, str] | None = None,
) -> dict:
    """Out-of-fold ensemble probabilities; for fold k, members and weights come from folds != k only."""
    if combiner not in COMBINERS:
        raise EnsembleError(f"unknown ensemble combiner {combiner!r}; choose one of {', '.join(COMBINERS)}")
    n_classes = next(iter(probas.values())).shape[1]
    out = np.full((len(y), n_classes), np.nan)
    per_fold = []
    for train, test in splits:
        train = train[~np.isnan(next(iter(probas.values()))[train, 0])]  # hold-out splits: no OOF rows to fit on
        if fixed_members:
            members = fixed_members
        else:
            acc = {
                name: float(np.mean(p[train].argmax(1) == y[train])) if len(train) else 0.0
                for name, p in probas.items()
            }
            loss = {name: _log_loss(p[train], y[train]) for name, p in probas.items()}
            members = select_members(acc, family, n_members, loss, view)
        P = np.stack([probas[m] for m in members])
        if len(train) == 0 and combiner not in FIXED:
            raise EnsembleError(f"{combiner} needs out-of-fold training predictions; this split has none (use k-fold)")
        out[test], w = combine(combiner, P[:, train], y[train], P[:, test], method=method, seed=seed)
        per_fold.append({"members": members, "weights": None if w is None else [round(float(x), 4) for x in w]})
    return {"proba": out, "per_fold": per_fold}


def final_members(
    probas: dict[str, np.ndarray],
    family: dict[str, str],
    y: np.ndarray,
    *,
    n_members: int,
    view: dict[str, str] | None = None,
    fixed_members: list[str] | None = None,
) -> list[str]:
    """The members a deployed ensemble uses: select_members on every fold's out-of-fold predictions at once.

    In CV each fold chose its members from the other folds, so they can differ per fold; the refitted
    ensemble (the champion) has one set, chosen the same way on all the out-of-fold rows."""
    if fixed_members:
        return list(fixed_members)
    scored = ~np.isnan(np.stack(list(probas.values()))[..., 0]).any(axis=0)
    acc = {
        name: float(np.mean(p[scored].argmax(1) == y[scored])) if scored.any() else 0.0 for name, p in probas.items()
    }
    loss = {name: _log_loss(p[scored], y[scored]) for name, p in probas.items()}
    return select_members(acc, family, n_members, loss, view)


def pool_members(names: list[str], patterns: list[str]) -> list[str]:
    """The configurations whose names match any of the shell-style patterns ("*/birdnet*"), in their given order."""
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


@dataclass(frozen=True)
class EnsembleOutcome:
    """One ensemble's cross-validated result: what tracking logs and the champion needs (no MLflow here)."""

    name: str  # "<group>:<combiner>"
    group: str  # "ensemble", a named pool, or "<model>-repeats"
    combiner: str
    params: dict  # the run's parameters (model, features, combiner, seed, optimizer, n_members, pool)
    proba: np.ndarray  # out-of-fold probabilities
    per_fold: list[dict]  # members (and weights) chosen in each fold
    summary: dict  # cv_summary of the out-of-fold probabilities
    metrics: dict  # scalar metrics (and the book's optimistic accuracy where it applies)
    members: list[str]  # every configuration that was a member in some fold
    final: list[str]  # the members chosen on all folds (the champion's)


def evaluate_ensembles(
    results: list[ConfigResult],
    manifest_path: str,
    splits_path: str,
    combiners: list[str],
    *,
    n_members: int,
    method: str,
    seed: int,
    pools: dict[str, list[str]] | None = None,
    log=None,
) -> list[EnsembleOutcome]:
    """Mixed-family ensembles over every configuration ("ensemble:<combiner>"), over each named pool of
    configurations ("<pool>:<combiner>"), and of each model's repeated trainings, cross-validated fold-safely."""
    manifest = read_manifest(manifest_path)
    names, y = class_names(manifest), manifest["class_id"].to_numpy()
    owner, weights = pooling(manifest)
    splits = load_splits(splits_path)
    probas = {r.name: np.load(r.proba) for r in results}
    family = {r.name: r.family for r in results}
    view = {r.name: r.features for r in results}
    # group -> (candidate configurations, fixed members or None: chosen per fold by select_members)
    groups: dict[str, tuple[list[str], list[str] | None]] = {"ensemble": (list(probas), None)}
    for pool, patterns in (pools or {}).items():
        chosen = pool_members(list(probas), patterns)
        if len(chosen) >= 2:
            groups[pool] = (chosen, None)
        elif patterns and log is not None:
            log.warning("ensemble pool %r matches %d configuration(s) (%s): skipped", pool, len(chosen), patterns)
    for model in dict.fromkeys(r.config.model for r in results):
        reps = [r.name for r in results if r.config.model == model and r.config.repeat is not None]
        if len(reps) > 1:
            groups[f"{model}-repeats"] = (reps, reps)
    out = []
    for group, (candidates, fixed) in groups.items():
        pool_probas = {m: probas[m] for m in candidates}
        for combiner in combiners:
            name = f"{group}:{combiner}"
            params = {
                "model": name,
                "features": "probabilities",
                "combiner": combiner,
                "seed": seed,
                "optimizer": method if combiner == "weighted" else "none",
                "n_members": n_members,
                "pool": group if group == "ensemble" or fixed else f"{group}: {', '.join(candidates)}",
            }
            res = fold_safe_ensemble(
                pool_probas,
                family,
                y,
                splits,
                combiner=combiner,
                n_members=n_members,
                method=method,
                seed=seed,
                fixed_members=fixed,
                view=view,
            )
            summary = cv_summary(y, res["proba"], splits, names, owner=owner, weights=weights)
            metrics = scalar_metrics(summary)
            if combiner == "weighted" and fixed:
                P = np.stack([probas[m] for m in fixed])
                tested = ~np.isnan(P[0, :, 0])
                w, score, _ = optimistic_weights(P[:, tested], y[tested], method=method, seed=seed, n_iter=100)
                metrics["optimistic_accuracy"] = score  # the book's variant: tuned on the scored clips
            members = sorted({m for f in res["per_fold"] for m in f["members"]})
            final = final_members(pool_probas, family, y, n_members=n_members, view=view, fixed_members=fixed)
            out.append(
                EnsembleOutcome(
                    name, group, combiner, params, res["proba"], res["per_fold"], summary, metrics, members, final
                )
            )
    return out
