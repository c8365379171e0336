"""Ensembles on synthetic probability stacks whose right answers are known in advance."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.evaluation.ensemble_cv import fold_safe_ensemble
from tasks.evaluation.ensembles import (
    Combiner,
    EnsembleError,
    Stacker,
    average,
    fit_log_pool,
    log_pool,
    maximum,
    optimistic_weights,
    search_weights,
    vote,
    weighted,
)
from tasks.evaluation.optimizers import OPTIMIZERS

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


def test_weight_search_on_many_rows_uses_a_seeded_sample():
    P, y = _good_and_noisy(n=3000)
    w, _, _ = search_weights(P, y, method="jaya", seed=3, n_iter=20, max_rows=500)
    again = search_weights(P, y, method="jaya", seed=3, n_iter=20, max_rows=500)
    np.testing.assert_array_equal(w, again[0])
    assert w[0] == w.max()  # still finds the model that is always right


def test_search_rejects_unknown_names(good_and_noisy):
    P, y = good_and_noisy
    with pytest.raises(EnsembleError, match="pso"):
        search_weights(P, y, method="pso", seed=0)
    with pytest.raises(EnsembleError, match="objective"):
        search_weights(P, y, method="jaya", seed=0, objective="f1")
    with pytest.raises(EnsembleError, match="labels"):
        search_weights(P, y + N_CLASSES, method="jaya", seed=0)


def _splits(folds):
    return [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in np.unique(folds)]


def _safe(P, y, folds, *, combiner, method="jaya", members=None, n_members=None):
    """The production path (the flow's ensemble task) on a stack P of (models, n, C) probabilities."""
    probas = {f"m{i}": p for i, p in enumerate(P)}
    family = {name: name for name in probas}  # every model its own family and view
    res = fold_safe_ensemble(
        probas,
        family,
        y,
        _splits(folds),
        combiner=combiner,
        method=method,
        seed=0,
        n_members=n_members or len(P),
        fixed_members=members,
        view=family,
    )
    pred = res["proba"].argmax(1)
    res["fold_accuracy"] = [float(np.mean(pred[folds == k] == y[folds == k])) for k in np.unique(folds)]
    res["mean"] = float(np.mean(res["fold_accuracy"]))
    return res


def test_parameter_free_combiners_are_applied_per_fold_unchanged(good_and_noisy):
    P, y = good_and_noisy
    folds = np.arange(len(y)) % 4
    for name, combine in [("average", average), ("maximum", maximum), ("vote", vote)]:
        res = _safe(P, y, folds, combiner=name, members=["m0", "m1", "m2"])
        np.testing.assert_allclose(res["proba"], combine(P))
        assert len(res["per_fold"]) == 4 and all(f["weights"] is None for f in res["per_fold"])


def _relabel_fold_to_follow_model(P, y, folds, k, model):
    """Labels of fold k rewritten so that `model` is perfect there: a leaky fit would shift weight to it."""
    y2 = y.copy()
    y2[folds == k] = P[model, folds == k].argmax(axis=1)
    return y2


@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize(
    "combiner,method", [("weighted", "jaya"), ("weighted", "de"), ("stacking", None), ("logpool", None)]
)
def test_fold_safe_ensembles_never_fit_on_the_scored_folds_labels(good_and_noisy, combiner, method, k):
    P, y = good_and_noisy
    folds = np.arange(len(y)) % 4
    y2 = _relabel_fold_to_follow_model(P, y, folds, k=k, model=1)
    members = ["m0", "m1", "m2"]
    before = _safe(P, y, folds, combiner=combiner, method=method, members=members)
    after = _safe(P, y2, folds, combiner=combiner, method=method, members=members)
    other = (k + 1) % 4
    np.testing.assert_array_equal(before["proba"][folds == k], after["proba"][folds == k])
    if combiner in ("weighted", "logpool"):
        assert before["per_fold"][k]["weights"] == after["per_fold"][k]["weights"]
        # The relabelled fold does move the weights fitted on it, so a leak would have shown above.
        assert after["per_fold"][other]["weights"][1] > before["per_fold"][other]["weights"][1] + 0.05
    else:
        assert not np.allclose(before["proba"][folds == other], after["proba"][folds == other])


def _cheat_on_fold_zero(n_per_fold: int = 40, n_folds: int = 5, C: int = 4, seed: int = 3):
    """m0 is right on every clip of fold 0 but on 55% of the others; m1 is right on 60% everywhere.

    Ranked (or weighted) on the other folds, m1 wins for fold 0; ranked on all folds, m0 (60% + its perfect
    fold) wins and fold 0 scores 100%: a leak that inflates exactly the fold being scored."""
    rng = np.random.default_rng(seed)
    n = n_per_fold * n_folds
    y = rng.integers(0, C, n)
    folds = np.repeat(np.arange(n_folds), n_per_fold)

    def model(right: np.ndarray, confidence: float) -> np.ndarray:
        wrong = (y + rng.integers(1, C, n)) % C
        p = np.full((n, C), (1 - confidence) / (C - 1))
        p[np.arange(n), np.where(right, y, wrong)] = confidence
        return p

    def exactly(share: dict[int, float]) -> np.ndarray:
        right = np.zeros(n, bool)
        for k in range(n_folds):
            idx = np.flatnonzero(folds == k)
            right[rng.choice(idx, round(share.get(k, share[-1]) * len(idx)), replace=False)] = True
        return right

    right0 = exactly({0: 1.0, -1: 0.55})
    right1 = exactly({-1: 0.6})
    return np.stack([model(right0, 0.9), model(right1, 0.6)]), y, folds


def test_members_are_ranked_on_the_other_folds_only():
    P, y, folds = _cheat_on_fold_zero()
    overall = (P.argmax(2) == y).mean(axis=1)
    assert overall[0] > overall[1]  # on all folds the cheat looks best
    res = _safe(P, y, folds, combiner="average", n_members=1)
    assert res["per_fold"][0]["members"] == ["m1"]  # fold 0 is scored with the honest model
    assert res["fold_accuracy"][0] < 0.8


def test_weights_are_fitted_on_the_other_folds_only():
    P, y, folds = _cheat_on_fold_zero()
    res = _safe(P, y, folds, combiner="weighted", method="jaya", members=["m0", "m1"])
    w0 = res["per_fold"][0]["weights"]
    assert w0[1] > w0[0]  # fitted without fold 0, the cheat gets less weight
    assert res["fold_accuracy"][0] < 0.8


def test_optimistic_weights_overstate_what_fold_safe_scoring_finds_on_pure_noise():
    rng = np.random.default_rng(7)
    P = rng.dirichlet(np.ones(10), size=(6, 120))
    y = rng.integers(0, 10, 120)
    folds = np.arange(120) % 5
    _, optimistic, _ = optimistic_weights(P, y, "jaya", 0, n_iter=100)
    safe = _safe(P, y, folds, combiner="weighted", method="jaya", members=[f"m{i}" for i in range(6)])
    assert optimistic > (average(P).argmax(1) == y).mean()
    assert optimistic - safe["mean"] > 0.05
    assert len(safe["per_fold"]) == 5 and safe["proba"].shape == (120, 10)


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
    avg = _safe(P, y, folds, combiner="average", members=["m0", "m1"])
    stack = _safe(P, y, folds, combiner="stacking", members=["m0", "m1"])
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


def test_fold_safe_ensemble_validates_its_inputs(good_and_noisy):
    P, y = good_and_noisy
    folds = np.arange(len(y)) % 4
    with pytest.raises(EnsembleError, match="combiner"):
        _safe(P, y, folds, combiner="median")
    # a hold-out split: no out-of-fold predictions on the training rows to fit a stacker on
    test = np.flatnonzero(folds == 0)
    probas = {f"m{i}": np.where((folds == 0)[:, None], p, np.nan) for i, p in enumerate(P)}
    with pytest.raises(EnsembleError, match="out-of-fold"):
        fold_safe_ensemble(
            probas,
            {m: m for m in probas},
            y,
            [(np.flatnonzero(folds != 0), test)],
            combiner="stacking",
            n_members=2,
            method="jaya",
            seed=0,
        )


def test_select_members_mixes_views_then_families_and_breaks_ties_by_log_loss_not_arrival_order():
    from tasks.evaluation.ensemble_cv import _log_loss, select_members

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
    assert _log_loss(sure, y) < _log_loss(unsure, y)  # same accuracy, the confident one wins ties


def test_log_pool_gives_noise_no_weight_and_sharpens_a_timid_right_model(good_and_noisy):
    P, y = good_and_noisy
    w = fit_log_pool(P, y)
    assert w[0] > 1.0  # the timid model (0.3 on the true class) is made sharper: a weight above 1 is a temperature
    assert w[1] < 0.05 * w[0] and w[2] < 0.05 * w[0]  # confident noise is left out
    pooled = log_pool(P, w)
    np.testing.assert_allclose(pooled.sum(axis=1), 1.0)
    assert (pooled.argmax(1) == y).mean() == 1.0
    assert (average(P).argmax(1) == y).mean() < 1.0  # the plain average is pulled off by the noise


def test_log_pool_matches_a_hand_computed_value_and_rejects_bad_weights():
    P = np.array([[[0.5, 0.5]], [[0.8, 0.2]]])
    p = log_pool(P, [1.0, 2.0])
    expected = np.array([0.5 * 0.8**2, 0.5 * 0.2**2])
    np.testing.assert_allclose(p[0], expected / expected.sum())
    with pytest.raises(EnsembleError):
        log_pool(P, [1.0, -1.0])


def test_log_pool_combiner_is_fitted_like_the_others_and_needs_fitting(good_and_noisy):
    P, y = good_and_noisy
    with pytest.raises(EnsembleError):
        Combiner("logpool").predict_proba(P)
    fitted = Combiner("logpool").fit(P, y)
    np.testing.assert_allclose(fitted.weights_, fit_log_pool(P, y))
    np.testing.assert_allclose(fitted.predict_proba(P), log_pool(P, fitted.weights_))
