"""Ensembles on synthetic probability stacks whose right answers are known in advance."""
from __future__ import annotations

import numpy as np
import pytest

from tasks.ensemble import (
    EnsembleError, Stacker, average, fold_safe_scores, maximum, optimistic_weights,
    search_weights, vote, weighted,
)
from tasks.optimizers import OPTIMIZERS

N_CLASSES = 5


def _good_and_noisy(seed: int = 0, n: int = 200, C: int = N_CLASSES):
    """Model 0 is always right but timid (0.3 on the true class); models 1-2 are confident noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    good = np.full((n, C), 0.7 / (C - 1))
    good[np.arange(n), y] = 0.3
    noisy = rng.dirichlet(np.full(C, 0.2), size=(2, n))
    return np.concatenate([good[None], noisy]), y


@pytest.fixture
def good_and_noisy():
    return _good_and_noisy()


@pytest.mark.parametrize("shape", [(1, 1, 2), (3, 7, 4), (6, 50, 10)])
@pytest.mark.parametrize("combine", [average, maximum, vote, lambda P: weighted(P, np.arange(1, len(P) + 1))])
def test_combiners_return_n_by_c_rows_summing_to_one(shape, combine, rng):
    P = rng.dirichlet(np.ones(shape[2]), size=shape[:2])
    out = combine(P)
    assert out.shape == shape[1:] and out.dtype == np.float64
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_combiners_match_hand_computed_values():
    P = np.array([[[0.5, 0.3, 0.2]], [[0.1, 0.6, 0.3]]])
    np.testing.assert_allclose(average(P), [[0.3, 0.45, 0.25]])
    np.testing.assert_allclose(maximum(P), [[0.5 / 1.4, 0.6 / 1.4, 0.3 / 1.4]])
    np.testing.assert_allclose(weighted(P, [3, 1]), [[0.4, 0.375, 0.225]])
    np.testing.assert_allclose(weighted(P, [0, 2]), P[1])


def test_vote_takes_the_majority_even_against_summed_probability():
    P = np.array([[[0.5, 0.4, 0.1]], [[0.5, 0.4, 0.1]], [[0.0, 1.0, 0.0]]])
    np.testing.assert_array_equal(vote(P), [[1.0, 0.0, 0.0]])


def test_vote_breaks_ties_by_summed_probability_among_tied_classes_only():
    # One vote each for classes 0 and 1; class 2 has the largest sum but no votes, class 1 beats 0.
    P = np.array([[[0.40, 0.21, 0.39]], [[0.05, 0.50, 0.45]]])
    np.testing.assert_array_equal(vote(P), [[0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(vote(P[::-1]), [[0.0, 1.0, 0.0]])


@pytest.mark.parametrize("w", [[-1, 2, 0], [0, 0, 0], [1, 2], [np.nan, 1, 1]])
def test_weighted_rejects_bad_weights(good_and_noisy, w):
    with pytest.raises(EnsembleError):
        weighted(good_and_noisy[0], w)


@pytest.mark.parametrize("method", OPTIMIZERS)
def test_every_optimizer_finds_the_good_model(good_and_noisy, method):
    P, y = good_and_noisy
    assert (average(P).argmax(1) == y).mean() < 0.5
    w, score, history = search_weights(P, y, method=method, seed=3)
    assert w.shape == (3,) and np.all(w >= 0)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > 0.5
    assert score == 1.0 == (weighted(P, w).argmax(1) == y).mean()
    assert len(history) == 200 and history[-1] == score
    assert np.all(np.diff(history) >= 0)


@pytest.mark.parametrize("method", OPTIMIZERS)
def test_log_loss_objective_reports_the_weights_negative_log_loss(good_and_noisy, method):
    P, y = good_and_noisy
    w, score, history = search_weights(P, y, method=method, seed=0, n_iter=60, objective="log_loss")
    probs = weighted(P, w)
    assert score == pytest.approx(np.log(probs[np.arange(len(y)), y]).mean())
    assert score > np.log(average(P)[np.arange(len(y)), y]).mean()
    assert np.all(np.diff(history) >= 0)


@pytest.mark.parametrize("method", OPTIMIZERS)
def test_search_is_deterministic_per_seed(method):
    P, y = _good_and_noisy(seed=5, n=60)
    a = search_weights(P, y, method=method, seed=11, n_iter=30)
    b = search_weights(P, y, method=method, seed=11, n_iter=30)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


def test_proportional_weights_follow_model_accuracy(good_and_noisy):
    P, y = good_and_noisy
    acc = (P.argmax(axis=2) == y).mean(axis=1)
    w, score, history = search_weights(P, y, method="proportional", seed=0)
    np.testing.assert_allclose(w, acc / acc.sum())
    assert history == [score] == [(weighted(P, w).argmax(1) == y).mean()]


def test_search_rejects_unknown_names(good_and_noisy):
    P, y = good_and_noisy
    with pytest.raises(EnsembleError, match="pso"):
        search_weights(P, y, method="pso", seed=0)
    with pytest.raises(EnsembleError, match="objective"):
        search_weights(P, y, method="jaya", seed=0, objective="f1")
    with pytest.raises(EnsembleError, match="labels"):
        search_weights(P, y + N_CLASSES, method="jaya", seed=0)


def test_parameter_free_combiners_are_applied_per_fold_unchanged(good_and_noisy):
    P, y = good_and_noisy
    folds = np.arange(len(y)) % 4
    for name, combine in [("average", average), ("maximum", maximum), ("vote", vote)]:
        res = fold_safe_scores(P, y, folds, combiner=name)
        np.testing.assert_allclose(res["proba"], combine(P))
        assert res["folds"] == [0, 1, 2, 3] and res["weights"] is None
        assert res["mean"] == pytest.approx(np.mean(res["fold_accuracy"]))


def _relabel_fold_to_follow_model(P, y, folds, k, model):
    """Labels of fold k rewritten so that `model` is perfect there: a leaky fit would shift weight to it."""
    y2 = y.copy()
    y2[folds == k] = P[model, folds == k].argmax(axis=1)
    return y2


@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize("combiner,method", [("weighted", "jaya"), ("weighted", "de"), ("stacking", None)])
def test_fold_safe_scores_never_fit_on_the_scored_folds_labels(good_and_noisy, combiner, method, k):
    P, y = good_and_noisy
    folds = np.arange(len(y)) % 4
    y2 = _relabel_fold_to_follow_model(P, y, folds, k=k, model=1)
    kw = {"n_iter": 60} if combiner == "weighted" else {}
    before = fold_safe_scores(P, y, folds, combiner=combiner, method=method, seed=0, **kw)
    after = fold_safe_scores(P, y2, folds, combiner=combiner, method=method, seed=0, **kw)
    other = (k + 1) % 4
    np.testing.assert_array_equal(before["proba"][folds == k], after["proba"][folds == k])
    if combiner == "weighted":
        np.testing.assert_array_equal(before["weights"][k], after["weights"][k])
        # The relabelled fold does move the weights fitted on it, so a leak would have shown above.
        assert after["weights"][other][1] > before["weights"][other][1] + 0.05
    else:
        assert not np.allclose(before["proba"][folds == other], after["proba"][folds == other])


def test_optimistic_weights_overstate_what_fold_safe_scoring_finds_on_pure_noise():
    rng = np.random.default_rng(7)
    P = rng.dirichlet(np.ones(10), size=(6, 120))
    y = rng.integers(0, 10, 120)
    folds = np.arange(120) % 5
    _, optimistic, _ = optimistic_weights(P, y, "jaya", 0, n_iter=100)
    safe = fold_safe_scores(P, y, folds, combiner="weighted", method="jaya", n_iter=100)
    assert optimistic > (average(P).argmax(1) == y).mean()
    assert optimistic - safe["mean"] > 0.05
    assert set(safe) >= {"fold_accuracy", "mean", "sem", "pooled_accuracy", "weights", "proba"}
    assert len(safe["weights"]) == 5 and safe["proba"].shape == (120, 10)


def _miscalibrated(seed: int = 0, n: int = 300, C: int = N_CLASSES):
    """Model 0 is confident and always names the next class; model 1 is right but timid."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    shifted = np.full((n, C), 0.02 / (C - 1))
    shifted[np.arange(n), (y + 1) % C] = 0.98
    timid = rng.dirichlet(np.full(C, 5.0), size=n)
    timid[np.arange(n), y] += 0.15
    timid /= timid.sum(axis=1, keepdims=True)
    return np.stack([shifted, timid]), y


def test_stacker_beats_average_when_a_model_is_systematically_off():
    P, y = _miscalibrated()
    folds = np.arange(len(y)) % 5
    avg = fold_safe_scores(P, y, folds, combiner="average")
    stack = fold_safe_scores(P, y, folds, combiner="stacking")
    assert avg["mean"] < 0.1
    assert stack["mean"] > 0.95


def test_stacker_follows_scikit_learn_conventions_and_pads_unseen_classes():
    P, y = _miscalibrated(n=100)
    seen = y != 4
    stacker = Stacker(C=0.5)
    assert stacker.fit(P[:, seen], y[seen]) is stacker
    assert stacker.C == 0.5 and list(stacker.classes_) == [0, 1, 2, 3]
    out = stacker.predict_proba(P)
    assert out.shape == (100, N_CLASSES)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert np.all(out[:, 4] == 0)
    with pytest.raises(EnsembleError, match="fitted on 2 models"):
        stacker.predict_proba(P[:1])


def test_fold_safe_scores_validates_its_inputs(good_and_noisy):
    P, y = good_and_noisy
    folds = np.arange(len(y)) % 4
    with pytest.raises(EnsembleError, match="method"):
        fold_safe_scores(P, y, folds, combiner="weighted")
    with pytest.raises(EnsembleError, match="combiner"):
        fold_safe_scores(P, y, folds, combiner="median")
    with pytest.raises(EnsembleError, match="fold id per clip"):
        fold_safe_scores(P, y, folds[:-1], combiner="average")
    with pytest.raises(EnsembleError, match="two folds"):
        fold_safe_scores(P, y, np.zeros_like(folds), combiner="stacking")
    with pytest.raises(EnsembleError, match="shape"):
        fold_safe_scores(P[0], y, folds, combiner="average")


def test_select_members_mixes_views_then_families_and_breaks_ties_by_log_loss_not_arrival_order():
    from tasks.ensemble_cv import _log_loss, select_members

    family = {"svm": "classical", "logreg": "classical", "rf": "classical", "cnn": "cnn2d", "mlp": "mlp"}
    acc = {"svm": 0.92, "logreg": 0.90, "rf": 0.90, "cnn": 0.89, "mlp": 0.70}
    loss = {"svm": 0.3, "logreg": 0.5, "rf": 0.4, "cnn": 0.4, "mlp": 1.0}
    # each family's best first, by accuracy; then the next best overall: rf and logreg tie, rf's loss is lower
    assert select_members(acc, family, 4, loss) == ["svm", "cnn", "mlp", "rf"]
    assert select_members(dict(reversed(acc.items())), family, 4, loss) == ["svm", "cnn", "mlp", "rf"]
    assert select_members(acc, family, 2, loss) == ["svm", "cnn"]
    # views (input representations) come first: the best model on a third representation beats a better
    # second model on a representation already chosen, in the family stage as well as the fill stage
    view = {"svm": "engineered", "logreg": "engineered", "rf": "engineered", "cnn": "logmel", "mlp": "engineered"}
    acc2, family2 = {**acc, "pc": 0.80}, {**family, "pc": "cnn2d"}
    assert select_members(acc2, family2, 3, loss, {**view, "pc": "pcen"}) == ["svm", "cnn", "pc"]
    assert select_members(acc2, family2, 4, loss, {**view, "pc": "pcen"}) == ["svm", "cnn", "pc", "mlp"]
    assert select_members(acc2, family2, 3, loss, {**view, "pc": "logmel"}) == ["svm", "cnn", "mlp"]
    y = np.array([0, 1])
    sure, unsure = np.array([[0.9, 0.1], [0.1, 0.9]]), np.array([[0.6, 0.4], [0.4, 0.6]])
    assert _log_loss(sure, y) < _log_loss(unsure, y)   # same accuracy, the confident one wins ties
