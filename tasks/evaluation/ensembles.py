"""Ensembles of class-probability arrays: fixed combiners, searched weights, stacking, leakage-safe scoring.

P is always a stack of shape (m models, n clips, C classes); every combiner returns (n, C).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression

from tasks.errors import SoundflowError
from tasks.evaluation.optimizers import OPTIMIZERS, maximize

COMBINERS = ("average", "maximum", "vote", "weighted", "stacking", "logpool")
WEIGHT_METHODS = OPTIMIZERS + ("proportional",)
_EPS = 1e-12


class EnsembleError(SoundflowError, ValueError):
    """Ensemble inputs are inconsistent (shapes, labels, folds, weights or names)."""


def _check(P, y=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a probability stack (and labels) early, with messages that say how to fix them."""
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 3 or 0 in P.shape:
        raise EnsembleError(
            f"P must have shape (models, clips, classes), got {P.shape}; stack per-model (n, C) arrays with np.stack"
        )
    if not np.all(np.isfinite(P)) or np.any(P < 0):
        raise EnsembleError("P holds negative or non-finite values; pass softmax probabilities")
    if y is None:
        return P, None
    y = np.asarray(y)
    if y.shape != (P.shape[1],) or not np.issubdtype(y.dtype, np.integer):
        raise EnsembleError(f"y must be {P.shape[1]} integer labels, got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= P.shape[2]:
        raise EnsembleError(f"labels must lie in [0, {P.shape[2]}), got [{y.min()}, {y.max()}]")
    return P, y


def _normalize(w, m: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (m,) or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise EnsembleError(f"weights must be {m} finite values >= 0 with a positive sum, got {w!r}")
    return w / w.sum()


def average(P) -> np.ndarray:
    """Mean of the models' probabilities."""
    return _check(P)[0].mean(axis=0)


def maximum(P) -> np.ndarray:
    """Per-class maximum over models, renormalized so each row sums to 1."""
    top = _check(P)[0].max(axis=0)
    return top / np.maximum(top.sum(axis=1, keepdims=True), _EPS)


def vote(P) -> np.ndarray:
    """One-hot majority vote of the models' argmaxes; ties go to the tied class with most summed probability."""
    P = _check(P)[0]
    m, n, C = P.shape
    counts = np.zeros((n, C))
    np.add.at(counts, (np.arange(n)[None, :], P.argmax(axis=2)), 1.0)
    tied = counts == counts.max(axis=1, keepdims=True)
    winner = np.where(tied, P.sum(axis=0), -np.inf).argmax(axis=1)
    return np.eye(C)[winner]


def weighted(P, w) -> np.ndarray:
    """Weighted mean of the models' probabilities; w >= 0 is normalized to sum 1."""
    P = _check(P)[0]
    return np.tensordot(_normalize(w, P.shape[0]), P, axes=1)


_POOL_FLOOR = 1e-4  # a member's probability is floored here before its log: one hard zero cannot veto a class


def log_pool(P, w) -> np.ndarray:
    """Log-linear pool: softmax of the weighted sum of the models' log-probabilities (w >= 0, not normalized:
    the weights' size also sets how sharp the result is)."""
    P = _check(P)[0]
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (P.shape[0],) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise EnsembleError(f"logpool weights must be {P.shape[0]} finite values >= 0, got {w!r}")
    return np.exp(log_softmax(np.tensordot(w, np.log(np.clip(P, _POOL_FLOOR, None)), axes=1), axis=1))


def fit_log_pool(P, y) -> np.ndarray:
    """The log-linear pool's weights (m,) >= 0 that minimize the log loss on (P, y).

    One weight per model both calibrates it (a temperature) and weighs it: a weak or redundant member gets a weight
    near 0 instead of pulling the average down, and m numbers fitted on a few hundred out-of-fold clips do not
    overfit the way an accuracy search over weights does. The loss is convex in w (L-BFGS-B, bounds w >= 0)."""
    P, y = _check(P, y)
    L = np.log(np.clip(P, _POOL_FLOOR, None))
    rows = np.arange(len(y))

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        logp = log_softmax(np.tensordot(w, L, axes=1), axis=1)
        residual = np.exp(logp)
        residual[rows, y] -= 1.0
        return float(-logp[rows, y].mean()), np.einsum("nc,mnc->m", residual, L) / len(y)

    start = np.full(P.shape[0], 1.0 / P.shape[0])
    res = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * P.shape[0])
    return np.maximum(res.x, 0.0)


class Stacker:
    """Stacking: a multinomial logistic regression on the models' concatenated (log-)probabilities.

    Log-probabilities are floored at log(floor) so a forest's hard zeros do not dominate; C is small
    because a few hundred out-of-fold clips must fit models x classes coefficients."""

    def __init__(self, C: float = 0.05, log: bool = True, floor: float = 1e-2, max_iter: int = 2000):
        self.C = C
        self.log = log
        self.floor = floor
        self.max_iter = max_iter

    def _features(self, P: np.ndarray) -> np.ndarray:
        X = np.log(np.clip(P, self.floor, None)) if self.log else P
        return X.transpose(1, 0, 2).reshape(P.shape[1], -1)

    def fit(self, P, y) -> "Stacker":
        P, y = _check(P, y)
        self.n_models_, self.n_classes_ = P.shape[0], P.shape[2]
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(self._features(P), y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, P) -> np.ndarray:
        """(n, C) probabilities; classes absent from the training labels get probability 0."""
        P = _check(P)[0]
        if P.shape[0] != self.n_models_ or P.shape[2] != self.n_classes_:
            raise EnsembleError(
                f"Stacker was fitted on {self.n_models_} models x {self.n_classes_} classes, got P of shape {P.shape}"
            )
        out = np.zeros((P.shape[1], self.n_classes_))
        out[:, self.classes_] = self.model_.predict_proba(self._features(P))
        return out


def _fitness(P: np.ndarray, y: np.ndarray, objective: str):
    """Batched objective of weight vectors W (k, m): accuracy (+ a log-loss tie-break worth < 1 clip) or -log-loss."""
    n = len(y)

    def fitness(W: np.ndarray) -> np.ndarray:
        W = W / np.maximum(W.sum(axis=1, keepdims=True), _EPS)
        W[W.sum(axis=1) == 0] = 1.0 / W.shape[1]
        probs = np.einsum("km,mnc->knc", W, P)
        log_loss = -np.log(np.clip(probs[:, np.arange(n), y], _EPS, None)).mean(axis=1)
        if objective == "log_loss":
            return -log_loss
        accuracy = (probs.argmax(axis=2) == y).mean(axis=1)
        return accuracy + np.exp(-log_loss) / (n + 1)

    return fitness


def _drop_tie_break(score: float, n: int) -> float:
    return float(np.floor(score * n + 1e-9) / n)


def search_weights(
    P,
    y,
    *,
    method: str,
    n_particles: int = 20,
    n_iter: int = 200,
    seed: int,
    objective: str = "accuracy",
    max_rows: int = 20_000,
) -> tuple[np.ndarray, float, list[float]]:
    """Search ensemble weights on (P, y); returns (weights (m,) summing to 1, best score, best score per iteration).

    The score is accuracy (ties broken by log-loss) or, with objective="log_loss", negative log-loss.
    method is one of OPTIMIZERS, or "proportional" for weights proportional to each model's accuracy.
    Past `max_rows` rows the search runs on a seeded random sample of them (memory and time stay flat).
    """
    P, y = _check(P, y)
    if len(y) > max_rows:  # each fitness call costs particles x members x rows x classes: a seeded sample suffices
        keep = np.sort(np.random.default_rng(seed).choice(len(y), max_rows, replace=False))
        P, y = P[:, keep], y[keep]
    if objective not in ("accuracy", "log_loss"):
        raise EnsembleError(f"objective must be 'accuracy' or 'log_loss', got {objective!r}")
    if method not in WEIGHT_METHODS:
        raise EnsembleError(f"unknown weight method {method!r}; choose one of {', '.join(WEIGHT_METHODS)}")
    fitness = _fitness(P, y, objective)
    if method == "proportional":
        x = np.maximum((P.argmax(axis=2) == y).mean(axis=1), _EPS)
        best = float(fitness(x[None].copy())[0])
        history = [best]
    else:
        x, best, history = maximize(
            fitness, P.shape[0], method=method, n_particles=n_particles, n_iter=n_iter, seed=seed
        )
    if objective == "accuracy":  # report plain accuracy: the tie-break is worth less than one clip
        best, history = _drop_tie_break(best, len(y)), [_drop_tie_break(h, len(y)) for h in history]
    w = np.full(P.shape[0], 1.0 / P.shape[0]) if x.sum() <= 0 else x / x.sum()
    return w, float(best), history


def optimistic_weights(P, y, method: str = "jaya", seed: int = 0, **kw) -> tuple[np.ndarray, float, list[float]]:
    """The book's variant: weights tuned on the very clips they are scored on, so the score is optimistic."""
    return search_weights(P, y, method=method, seed=seed, **kw)


class Combiner:
    """One ensemble combiner as an estimator over probability stacks: fit (weights or stacker) then predict_proba.

    average / maximum / vote fit nothing; weighted searches weights with `method` (100 iterations, as in CV);
    stacking fits a Stacker; logpool fits the log-linear pool's weights by log loss (fit_log_pool). The same object combines a CV fold's members and the champion's refitted members."""

    def __init__(self, kind: str = "average", method: str = "jaya", seed: int = 0):
        self.kind = kind
        self.method = method
        self.seed = seed

    def fit(self, P, y) -> "Combiner":
        if self.kind not in COMBINERS:
            raise EnsembleError(f"unknown ensemble combiner {self.kind!r}; choose one of {', '.join(COMBINERS)}")
        self.weights_, self.stacker_ = None, None
        if self.kind == "weighted":
            self.weights_, _, _ = search_weights(P, y, method=self.method, seed=self.seed, n_iter=100)
        elif self.kind == "stacking":
            self.stacker_ = Stacker().fit(P, y)
        elif self.kind == "logpool":
            self.weights_ = fit_log_pool(P, y)
        return self

    def predict_proba(self, P) -> np.ndarray:
        """(n, C) combined probabilities of a (members, n, C) stack."""
        fixed = {"average": average, "maximum": maximum, "vote": vote}
        if self.kind in fixed:
            return fixed[self.kind](P)
        if not hasattr(self, "weights_"):
            raise EnsembleError(f"the {self.kind} combiner must be fitted on out-of-fold probabilities first")
        if self.kind == "logpool":
            return log_pool(P, self.weights_)
        return weighted(P, self.weights_) if self.kind == "weighted" else self.stacker_.predict_proba(P)
