import numpy as np
import pytest
from sklearn.naive_bayes import GaussianNB

from tasks.evaluation.cv import cross_validate, predict_proba
from tasks.models.classical import CLASSICAL, make_classical
from tasks.models.rows import training_rows


def _blobs(rng, n_per=12, n_classes=3, d=5):
    y = np.repeat(np.arange(n_classes), n_per)
    X = rng.normal(size=(len(y), d)) + 3 * y[:, None]
    groups = np.array([f"s{i // 2}" for i in range(len(y))])
    folds = (np.arange(len(y)) // 2) % 3
    splits = [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in range(3)]
    return X, y, groups, splits


def test_augmented_copies_of_test_clips_never_train(rng):
    X, y, groups, splits = _blobs(rng)
    # tag each row: augmented copies carry the clip index in their first feature
    X_aug = np.stack([np.full((2, X.shape[1]), i, float) for i in range(len(y))])
    for train, test in splits:
        rows, yt, gt = training_rows(X, y, groups, train, X_aug)
        Xt = np.asarray(rows)
        copies = Xt[len(train) :, 0].astype(int)
        assert set(copies) == set(train.tolist())
        assert set(copies).isdisjoint(test.tolist())
        assert set(gt).isdisjoint(groups[test])
        assert len(Xt) == 3 * len(train)


def test_cross_validate_scores_only_originals(rng):
    X, y, groups, splits = _blobs(rng)
    seen = []

    class Spy(GaussianNB):
        def fit(self, X, y):
            seen.append(len(X))
            return super().fit(X, y)

    X_aug = X[:, None, :] + rng.normal(scale=0.1, size=(len(y), 2, X.shape[1]))
    res = cross_validate(Spy, X, y, splits, groups=groups, n_classes=3, X_aug=X_aug, score_aug_test=True)
    assert res["proba"].shape == (len(y), 3) and not np.isnan(res["proba"]).any()
    assert seen == [3 * len(tr) for tr, _ in splits]
    assert res["aug_proba"].shape == (len(y), 2, 3)
    assert np.mean(res["proba"].argmax(1) == y) > 0.9


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_every_classical_model_gives_probabilities(name, rng):
    X, y, groups, splits = _blobs(rng, n_per=15)
    est = make_classical(name, seed=0, n_jobs=1)
    tr, te = splits[0]
    if name == "rbf_svm":
        est.fit(X[tr], y[tr], groups=groups[tr])
    else:
        est.fit(X[tr], y[tr])
    p = predict_proba(est, X[te], 3)
    assert p.shape == (len(te), 3)
    assert np.allclose(p.sum(1), 1)
    assert np.mean(p.argmax(1) == y[te]) > 0.6


def test_missing_class_in_training_keeps_column_order(rng):
    X, y, _, _ = _blobs(rng)
    est = GaussianNB().fit(X[y != 1], y[y != 1])
    p = predict_proba(est, X, 3)
    assert np.all(p[:, 1] == 0) and np.mean(p.argmax(1)[y == 2] == 2) > 0.9
