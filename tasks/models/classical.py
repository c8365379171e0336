"""The book's classical suite, an RBF SVM tuned inside the training folds, and sklearn's MLP."""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from tasks.models.streamed import StreamedClassical

RBF_GRID = {"svc__C": [1.0, 10.0, 100.0], "svc__gamma": ["scale", 0.3, 3.0]}


# Tuning rows at most: an RBF SVM's fit grows about with the square of its rows, so on a large training fold the grid
# is searched on a grouped, stratified share of it and only the chosen parameters are fitted on every row (ESC-10's
# folds and the champion refit on its 1,200 rows with copies are searched whole, as before).
MAX_TUNING_ROWS = 2000


class GroupedGridSearch(GridSearchCV):
    """GridSearchCV whose inner folds are grouped by source clip, so tuning never leaks; on more than
    max_tuning_rows rows the grid is searched on a grouped, stratified subset and the best parameters refitted on all."""

    def __init__(self, estimator, param_grid, *, cv=None, n_jobs=None, refit=True, max_tuning_rows=MAX_TUNING_ROWS):
        super().__init__(estimator, param_grid, cv=cv, n_jobs=n_jobs, refit=refit)
        self.max_tuning_rows = max_tuning_rows

    def fit(self, X, y, groups=None, **kw):
        n = len(y)
        if not self.max_tuning_rows or n <= self.max_tuning_rows or groups is None:
            return super().fit(X, y, groups=groups, **kw)
        k = -(-n // self.max_tuning_rows)  # a 1/k share of the rows, whole groups, every class
        seed = getattr(self.cv, "random_state", None)
        _, part = next(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y, groups))
        refit, self.refit = self.refit, False
        try:
            super().fit(X[part], y[part], groups=np.asarray(groups)[part], **kw)
        finally:
            self.refit = refit
        self.tuning_rows_ = len(part)
        self.best_estimator_ = clone(self.estimator).set_params(**self.best_params_).fit(X, y)
        return self


class ScaledGamma(SVC):
    """SVC whose numeric gamma is relative to 1/n_features, so one grid fits every feature size."""

    def fit(self, X, y, sample_weight=None):
        g = self.gamma
        if not isinstance(g, str):
            self.gamma = g / X.shape[1]
        try:
            return super().fit(X, y, sample_weight)
        finally:
            self.gamma = g


def _scaled(clf) -> Pipeline:
    return make_pipeline(StandardScaler(), clf)


def _rbf(seed: int, n_jobs: int) -> GroupedGridSearch:
    inner = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=seed)
    return GroupedGridSearch(
        Pipeline([("scaler", StandardScaler()), ("svc", ScaledGamma(kernel="rbf"))]),
        RBF_GRID,
        cv=inner,
        n_jobs=n_jobs,
        refit=True,
    )


# name -> factory(seed, n_jobs); every model but the forests (trees do not care) is standardized inside the fold
# (scaler fit on training rows only). Nearest centroid, Gaussian naive Bayes and logistic regression are fitted a block
# at a time from the feature files (tasks/models/streamed.py): their memory does not grow with the dataset.
CLASSICAL: dict[str, Callable[[int, int], object]] = {
    "nearest_centroid": lambda s, j: StreamedClassical("nearest_centroid"),
    "knn3": lambda s, j: _scaled(KNeighborsClassifier(n_neighbors=3)),
    "knn7": lambda s, j: _scaled(KNeighborsClassifier(n_neighbors=7)),
    "gaussian_nb": lambda s, j: StreamedClassical("gaussian_nb"),
    "rf5": lambda s, j: RandomForestClassifier(5, random_state=s, n_jobs=j),
    "rf50": lambda s, j: RandomForestClassifier(50, random_state=s, n_jobs=j),
    "rf500": lambda s, j: RandomForestClassifier(500, random_state=s, n_jobs=j),
    "rf1000": lambda s, j: RandomForestClassifier(1000, random_state=s, n_jobs=j),
    "linear_svm_c0.01": lambda s, j: _scaled(LinearSVC(C=0.01, random_state=s, max_iter=5000)),
    "linear_svm_c0.1": lambda s, j: _scaled(LinearSVC(C=0.1, random_state=s, max_iter=5000)),
    "linear_svm_c1": lambda s, j: _scaled(LinearSVC(C=1.0, random_state=s, max_iter=5000)),
    "linear_svm_c10": lambda s, j: _scaled(LinearSVC(C=10.0, random_state=s, max_iter=5000)),
    "rbf_svm": _rbf,
    "logreg": lambda s, j: StreamedClassical("logreg", C=0.1, max_iter=2000),
    "mlp_sklearn": lambda s, j: _scaled(MLPClassifier((512, 128), solver="lbfgs", max_iter=200, random_state=s)),
}

BOOK_SUITE = [
    "nearest_centroid",
    "knn3",
    "knn7",
    "gaussian_nb",
    "rf5",
    "rf50",
    "rf500",
    "rf1000",
    "linear_svm_c0.01",
    "linear_svm_c0.1",
    "linear_svm_c1",
    "linear_svm_c10",
]


def make_classical(name: str, *, seed: int, n_jobs: int = 1):
    """A fresh, unfitted estimator for `name`."""
    if name not in CLASSICAL:
        raise KeyError(f"unknown classical model {name!r}; choose from {sorted(CLASSICAL)}")
    return CLASSICAL[name](seed, n_jobs)
