"""The k-fold engine shared by every model family: fit on training folds, score the held-out fold."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from tasks.models import rows as rowsets
from tasks.models.rows import Rows


def predict_proba(estimator, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities; softmax of decision scores or one-hot votes for models without them."""
    if hasattr(estimator, "predict_proba"):
        try:
            p = np.asarray(estimator.predict_proba(X), dtype=np.float64)
            return _align(p, getattr(estimator, "classes_", np.arange(p.shape[1])), n_classes)
        except AttributeError:  # e.g. SVC without probability=True
            pass
    if hasattr(estimator, "decision_function"):
        d = np.asarray(estimator.decision_function(X), dtype=np.float64)
        d = np.exp(d - d.max(axis=1, keepdims=True))
        return _align(d / d.sum(axis=1, keepdims=True), estimator.classes_, n_classes)
    pred = np.asarray(estimator.predict(X))
    out = np.zeros((len(X), n_classes))
    out[np.arange(len(X)), pred] = 1.0
    return out


def _align(p: np.ndarray, classes, n_classes: int) -> np.ndarray:
    """Put columns in class-id order even when a training fold lacked a class."""
    if p.shape[1] == n_classes and np.array_equal(np.asarray(classes), np.arange(n_classes)):
        return p
    out = np.zeros((len(p), n_classes))
    out[:, np.asarray(classes, dtype=int)] = p
    return out


def fit_and_score(
    make_estimator: Callable[[], object],
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    n_classes: int,
    X_aug: np.ndarray | None = None,
    score_aug_test: bool = False,
) -> dict:
    """One fold: fit on the training rows (+ their copies), score the test rows (+ their copies if asked).

    X and X_aug may be memory-mapped: models that stream (Keras) read them a batch at a time.

    Returns the estimator, test probabilities (len(test), C), aug_proba (len(test), n_copies, C) or None,
    fit and predict seconds."""
    rows, yt, gt = rowsets.training_rows(X, y, groups, train, X_aug)
    est = make_estimator()
    t0 = time.perf_counter()
    rowsets.fit(est, rows, yt, gt)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = predict_rows(est, Rows(X, test), n_classes)
    pred_s = time.perf_counter() - t0
    aug = None
    if score_aug_test and X_aug is not None:
        n_copies = X_aug.shape[1]
        copies = Rows(X, np.repeat(test, n_copies), np.tile(np.arange(n_copies), len(test)), X_aug)
        aug = predict_rows(est, copies, n_classes).reshape(len(test), n_copies, n_classes)
    return {"estimator": est, "proba": proba, "aug_proba": aug, "fit_seconds": fit_s, "predict_seconds": pred_s}


def predict_rows(estimator, rows: Rows, n_classes: int, *, chunk: int = 4096) -> np.ndarray:
    """predict_proba over Rows: streamed to models that read them, else `chunk` rows at a time."""
    if rowsets.streams(estimator):
        return predict_proba(estimator, rows, n_classes)
    out = [predict_proba(estimator, x, n_classes) for x in rows.batches(chunk)]
    return np.concatenate(out) if out else np.zeros((0, n_classes))


def cross_validate(
    make_estimator: Callable[[], object],
    X: np.ndarray,
    y: np.ndarray,
    splits,
    *,
    groups: np.ndarray,
    n_classes: int,
    X_aug: np.ndarray | None = None,
    score_aug_test: bool = False,
    on_fold: Callable[[int, dict], None] | None = None,
) -> dict:
    """Out-of-fold probabilities and timings, one fold after another (benchmarks, tests; the flow runs
    fit_and_score per fold in parallel). Test folds are always the original clips; with score_aug_test (the
    book's protocol) the augmented copies of test clips are scored too, as `aug_proba` (n, n_copies, C)."""
    proba = np.full((len(y), n_classes), np.nan)
    aug_proba = None
    if score_aug_test and X_aug is not None:
        aug_proba = np.full(X_aug.shape[:2] + (n_classes,), np.nan)
    fit_s, pred_s = [], []
    for k, (train, test) in enumerate(splits):
        res = fit_and_score(
            make_estimator, X, y, groups, train, test, n_classes=n_classes, X_aug=X_aug, score_aug_test=score_aug_test
        )
        proba[test] = res["proba"]
        if aug_proba is not None:
            aug_proba[test] = res["aug_proba"]
        fit_s.append(res["fit_seconds"])
        pred_s.append(res["predict_seconds"])
        if on_fold:
            fold_acc = float(np.mean(res["proba"].argmax(1) == y[test]))
            on_fold(k, {"fold": k, "accuracy": fold_acc, "fit_seconds": fit_s[-1], "estimator": res["estimator"]})
    return {"proba": proba, "aug_proba": aug_proba, "fit_seconds": fit_s, "predict_seconds": pred_s}
