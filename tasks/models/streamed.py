"""Classical models fitted a block at a time from memory-mapped rows, so their memory does not grow with the data.

Standardization, nearest centroid and Gaussian naive Bayes need only per-class counts, means and squared deviations
(one pass, merged block by block); multinomial logistic regression needs its loss and gradient, summed block by block
at each L-BFGS step (the same objective, solver and tolerances as scikit-learn's lbfgs). The result is the fitted
scikit-learn pipeline those models would have produced (StandardScaler -> model), so prediction, packaging and
serving are unchanged; tests/models/test_streamed.py checks it against scikit-learn's own fit.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tasks.models.rows import BLOCK_BYTES, Rows

# Training sets up to this size are read once and kept for the solver's repeated passes; larger ones are read again
# from their files at every pass (a block at a time), so memory stays bounded by this plus one block.
HOLD_BYTES = 128 << 20


def blocks(rows: Rows, *, hold: bool = False) -> list[np.ndarray] | "_Reread":
    """The rows in consecutive float32 blocks of about BLOCK_BYTES; kept in memory if asked and small enough."""
    per_row = max(1, int(np.prod(rows.shape[1:])) * 4)
    size = max(1, BLOCK_BYTES // per_row)
    if hold and len(rows) * per_row <= HOLD_BYTES:
        return list(rows.batches(size))
    return _Reread(rows, size)


class _Reread:
    """Blocks read from the files again at each iteration."""

    def __init__(self, rows: Rows, size: int):
        self.rows, self.size = rows, size

    def __iter__(self):
        return self.rows.batches(self.size)


def class_stats(rows: Rows, y_ind: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: count (K,), mean (K, d) and sum of squared deviations from that mean (K, d), in float64, merged
    block by block (Chan et al.'s pairwise update: no catastrophic cancellation)."""
    d = int(np.prod(rows.shape[1:]))
    count, mean, m2 = np.zeros(n_classes), np.zeros((n_classes, d)), np.zeros((n_classes, d))
    start = 0
    for xb in blocks(rows):
        yb = y_ind[start : start + len(xb)]
        start += len(xb)
        xb = xb.reshape(len(xb), -1)
        bad = ~np.isfinite(xb).all(axis=1)
        if bad.any():
            raise ValueError(
                f"training row {start - len(xb) + int(np.argmax(bad))} has a NaN or infinite feature value"
            )
        for c in np.unique(yb):
            xc = xb[yb == c].astype(np.float64)
            nb, mb = len(xc), xc.mean(axis=0)
            m2b = ((xc - mb) ** 2).sum(axis=0)
            na = count[c]
            delta = mb - mean[c]
            tot = na + nb
            mean[c] += delta * nb / tot
            m2[c] += m2b + delta**2 * na * nb / tot
            count[c] = tot
    return count, mean, m2


def pooled(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The whole set's count, mean and sum of squared deviations from its classes' statistics."""
    n = count.sum()
    mu = (count[:, None] * mean).sum(axis=0) / n
    return n, mu, m2.sum(axis=0) + (count[:, None] * (mean - mu) ** 2).sum(axis=0)


def fitted_scaler(n: float, mu: np.ndarray, m2: np.ndarray) -> StandardScaler:
    """A StandardScaler as scikit-learn fits it (population variance; zero variance scales by 1)."""
    var = m2 / n
    scale = np.sqrt(var)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    sc = StandardScaler()
    sc.mean_, sc.var_, sc.scale_ = mu, var, scale
    sc.n_samples_seen_, sc.n_features_in_ = int(n), len(mu)
    return sc


def _nearest_centroid(stats, classes: np.ndarray, scaler: StandardScaler) -> NearestCentroid:
    count, mean, m2 = stats
    n, k = count.sum(), len(count)
    centroids = (mean - scaler.mean_) / scaler.scale_
    wcsd = np.sqrt((m2 / scaler.scale_**2).sum(axis=0) / (n - k))
    m = np.sqrt(1.0 / count - 1.0 / n)[:, None]
    nc = NearestCentroid()
    prior = {"empirical": count / n, "uniform": np.full(k, 1.0 / k)}.get(nc.priors)
    if prior is None:
        raise ValueError(f"nearest centroid: priors {nc.priors!r} are not supported when fitted block by block")
    nc.classes_, nc.class_prior_, nc.centroids_ = classes, prior, centroids
    nc.within_class_std_dev_, nc.n_features_in_ = wcsd, centroids.shape[1]
    nc.deviations_ = centroids / (m * (wcsd + np.median(wcsd)))  # the dataset centroid is 0 once standardized
    return nc


def _gaussian_nb(stats, classes: np.ndarray, scaler: StandardScaler, var_smoothing: float = 1e-9) -> GaussianNB:
    count, mean, m2 = stats
    var = scaler.var_ / scaler.scale_**2  # each feature's variance once standardized (1, or 0 if constant)
    nb = GaussianNB(var_smoothing=var_smoothing)
    nb.epsilon_ = var_smoothing * var.max()
    nb.classes_, nb.class_count_, nb.class_prior_ = classes, count.astype(np.float64), count / count.sum()
    nb.theta_ = (mean - scaler.mean_) / scaler.scale_
    nb.var_ = m2 / count[:, None] / scaler.scale_**2 + nb.epsilon_
    nb.n_features_in_ = nb.theta_.shape[1]
    return nb


def _logreg(
    rows: Rows, y_ind: np.ndarray, classes: np.ndarray, scaler: StandardScaler, C: float, max_iter: int, tol: float
):
    """Multinomial (binary: one logit) L2 logistic regression on standardized rows, its loss and gradient summed block
    by block: scikit-learn's lbfgs objective (mean log loss + ||W||^2 / (2 C n)), start (zeros) and stopping rule."""
    d, k = len(scaler.mean_), len(classes)
    cols = 1 if k == 2 else k
    n = len(y_ind)
    data = blocks(rows, hold=True)
    onehot = np.eye(k)[y_ind]

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = w[: d * cols].reshape(d, cols), w[d * cols :]
        loss, gW, gb, start = 0.0, np.zeros((d, cols)), np.zeros(cols), 0
        for xb in data:
            xs = (xb.reshape(len(xb), -1).astype(np.float64) - scaler.mean_) / scaler.scale_
            z = xs @ W + b
            if cols == 1:
                z = np.hstack([np.zeros((len(z), 1)), z])
            lse = logsumexp(z, axis=1)
            t = onehot[start : start + len(xb)]
            start += len(xb)
            loss += float((lse - (z * t).sum(axis=1)).sum())
            g = np.exp(z - lse[:, None]) - t
            g = g[:, 1:] if cols == 1 else g
            gW += xs.T @ g
            gb += g.sum(axis=0)
        lam = 1.0 / C
        loss = loss / n + 0.5 * lam * float((W * W).sum()) / n
        return loss, np.concatenate([(gW + lam * W).ravel() / n, gb / n])

    res = minimize(
        loss_grad,
        np.zeros(d * cols + cols),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    lr = LogisticRegression(C=C, max_iter=max_iter, tol=tol)
    lr.coef_ = res.x[: d * cols].reshape(d, cols).T.copy()
    lr.intercept_ = res.x[d * cols :].copy()
    lr.classes_, lr.n_features_in_, lr.n_iter_ = classes, d, np.array([res.nit])
    return lr


class StreamedClassical(ClassifierMixin, BaseEstimator):
    """A standardized nearest-centroid, Gaussian naive Bayes or logistic-regression model fitted from Rows a block at a
    time (arrays too); `model_` is the equivalent fitted scikit-learn pipeline, which predicts."""

    reads_rows = True  # fit and predict_proba read Rows block by block (tasks/models/rows.py)

    def __init__(self, kind: str = "gaussian_nb", C: float = 1.0, max_iter: int = 100, tol: float = 1e-4):
        self.kind, self.C, self.max_iter, self.tol = kind, C, max_iter, tol

    def fit(self, X, y):
        rows, y = Rows.of(np.asarray(X) if not isinstance(X, Rows) else X), np.asarray(y)
        classes, y_ind = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{self.kind}: the training rows hold one class ({classes[0]}); at least two are needed")
        stats = class_stats(rows, y_ind, len(classes))
        scaler = fitted_scaler(*pooled(*stats))
        if self.kind == "nearest_centroid":
            clf = _nearest_centroid(stats, classes, scaler)
        elif self.kind == "gaussian_nb":
            clf = _gaussian_nb(stats, classes, scaler)
        elif self.kind == "logreg":
            clf = _logreg(rows, y_ind, classes, scaler, self.C, self.max_iter, self.tol)
        else:
            raise ValueError(f"unknown streamed model {self.kind!r}; choose from nearest_centroid, gaussian_nb, logreg")
        self.model_ = Pipeline([("standardscaler", scaler), (type(clf).__name__.lower(), clf)])
        self.classes_, self.n_features_in_ = classes, scaler.n_features_in_
        return self

    def _each(self, method: str, X) -> np.ndarray:
        if not isinstance(X, Rows):
            return getattr(self.model_, method)(np.asarray(X).reshape(len(X), -1))
        parts = [getattr(self.model_, method)(xb.reshape(len(xb), -1)) for xb in blocks(X)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes_)))

    def predict_proba(self, X) -> np.ndarray:
        return self._each("predict_proba", X)

    def decision_function(self, X) -> np.ndarray:
        return self._each("decision_function", X)

    def predict(self, X) -> np.ndarray:
        return self._each("predict", X)
