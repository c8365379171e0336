"""The tuned RBF SVM: grouped inner folds, and a search whose cost stays flat on large training folds."""

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from tasks.models.classical import GroupedGridSearch, make_classical


def _blobs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.arange(n) % 4
    X = rng.normal(size=(n, 16)) + 1.5 * np.eye(4)[y] @ rng.normal(size=(4, 16))
    return X.astype(np.float32), y, np.arange(n) // 2  # pairs of rows share a group


def test_a_large_fold_is_tuned_on_a_grouped_share_and_refitted_on_every_row(rng):
    X, y, groups = _blobs(2400, rng)
    search = make_classical("rbf_svm", seed=0)
    search.max_tuning_rows = 600
    search.fit(X, y, groups=groups)
    assert 500 <= search.tuning_rows_ <= 700  # a quarter of the rows, whole groups
    svc = search.best_estimator_.named_steps["svc"]
    assert svc.get_params()["C"] == search.best_params_["svc__C"]
    assert search.best_estimator_.named_steps["scaler"].n_samples_seen_ == 2400  # the final fit saw every row
    assert (search.predict(X) == y).mean() > 0.9 and search.decision_function(X[:3]).shape == (3, 4)


def test_a_small_fold_is_searched_whole_as_before(rng):
    X, y, groups = _blobs(300, rng)
    ours = make_classical("rbf_svm", seed=0).fit(X, y, groups=groups)
    plain = GroupedGridSearch(
        ours.estimator, ours.param_grid, cv=StratifiedGroupKFold(3, shuffle=True, random_state=0), max_tuning_rows=0
    ).fit(X, y, groups=groups)
    assert not hasattr(ours, "tuning_rows_") and ours.best_params_ == plain.best_params_
    np.testing.assert_allclose(ours.decision_function(X), plain.decision_function(X), rtol=1e-6, atol=1e-8)
