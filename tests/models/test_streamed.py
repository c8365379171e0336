"""Classical models fitted block by block from memory-mapped rows give scikit-learn's own fitted models."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tasks.models import rows as rowsets
from tasks.models import streamed
from tasks.models.streamed import StreamedClassical

# scikit-learn's own NearestCentroid (the reference) warns about the data's constant feature; ours handles it silently
pytestmark = pytest.mark.filterwarnings("ignore:self.within_class_std_dev_ has at least 1 zero:UserWarning")

REFERENCE = {
    "nearest_centroid": lambda: make_pipeline(StandardScaler(), NearestCentroid()),
    "gaussian_nb": lambda: make_pipeline(StandardScaler(), GaussianNB()),
    "logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
}
PARAMS = {"logreg": {"C": 0.1, "max_iter": 2000}}
FITTED = {  # what each fitted model is made of
    "nearest_centroid": ("centroids_", "within_class_std_dev_", "class_prior_"),
    "gaussian_nb": ("theta_", "var_", "class_prior_"),
    "logreg": ("coef_", "intercept_"),
}


def _data(n=600, d=40, k=4, seed=0, sep=0.4):
    """Classes that differ in mean along a few directions, features with different offsets and scales, one constant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + sep * rng.normal(size=(k, d))[y]
    X = X * rng.uniform(0.01, 100, d) + rng.uniform(-1e3, 1e3, d)
    X[:, 3] = 7.0
    return X.astype(np.float32), y


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows, so every fit merges many of them; nothing held for the solver's passes."""
    monkeypatch.setattr(streamed, "BLOCK_BYTES", 40 * 4 * 37)
    monkeypatch.setattr(streamed, "HOLD_BYTES", 0)


@pytest.mark.parametrize("kind", sorted(REFERENCE))
def test_block_fit_matches_sklearn(kind, small_blocks, tmp_path):
    X, y = _data()
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    train, test = np.arange(450), np.arange(450, 600)
    ours = StreamedClassical(kind, **PARAMS.get(kind, {})).fit(rowsets.Rows(mm, train), y[train])
    ref = REFERENCE[kind]().fit(X[train], y[train])
    p_ours = ours.predict_proba(rowsets.Rows(mm, test))
    p_ref = ref.predict_proba(X[test])
    np.testing.assert_allclose(p_ours, p_ref, atol=2e-3)
    assert (p_ours.argmax(1) == p_ref.argmax(1)).mean() >= 0.99
    for name in ("mean_", "scale_"):
        np.testing.assert_allclose(ours.model_[0].__dict__[name], ref[0].__dict__[name], rtol=1e-5)
    for name in FITTED[kind]:
        np.testing.assert_allclose(ours.model_[-1].__dict__[name], ref[-1].__dict__[name], rtol=1e-3, atol=1e-4)
    assert (ours.predict(X[test]) == ref.predict(X[test])).mean() >= 0.99
    assert ours.score(X[test], y[test]) > 0.5  # learnable: chance is 0.25


@pytest.mark.parametrize("kind", sorted(REFERENCE))
def test_two_classes_and_missing_labels(kind):
    """Binary problems (one logit, as scikit-learn) and class ids with gaps (a fold without a class)."""
    X, y = _data(k=2)
    y = np.where(y == 0, 3, 7)
    ours = StreamedClassical(kind, **PARAMS.get(kind, {})).fit(X, y)
    ref = REFERENCE[kind]().fit(X, y)
    np.testing.assert_array_equal(ours.classes_, [3, 7])
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=2e-3)


def test_copies_are_rows_like_the_others(small_blocks):
    """Augmented copies read through Rows give the same model as the same samples stacked in memory."""
    X, y = _data(n=200)
    X_aug = np.stack([X + 0.5, X - 0.5], axis=1)
    rows, yt, _ = rowsets.training_rows(X, y, np.arange(200), np.arange(150), X_aug)
    stacked = np.concatenate([X[:150], X_aug[:150, 0], X_aug[:150, 1]])
    a = StreamedClassical("gaussian_nb").fit(rows, yt)
    b = StreamedClassical("gaussian_nb").fit(stacked, np.concatenate([y[:150]] * 3))
    np.testing.assert_allclose(a.predict_proba(X[150:]), b.predict_proba(X[150:]), rtol=1e-6, atol=1e-9)


def test_one_class_is_a_clear_error():
    X, y = _data(n=50)
    with pytest.raises(ValueError, match="one class"):
        StreamedClassical("nearest_centroid").fit(X, np.zeros(50, int))


def test_a_nan_feature_is_a_clear_error():
    X, y = _data(n=50)
    X[17, 5] = np.nan
    with pytest.raises(ValueError, match="training row 17 has a NaN"):
        StreamedClassical("gaussian_nb").fit(X, y)
