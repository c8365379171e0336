"""Progress lines and the time-left estimate: costs, ETA text, throttling, per-epoch hooks of a real Keras fit."""

import numpy as np
import pytest

from tasks.evaluation.progress import Throttle, WorkProgress, duration_text, estimated_cost, eta_text
from tasks.records import AugmentParams, Config


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_duration_and_eta_text():
    assert [duration_text(s) for s in (0, 59.4, 61, 3600 + 120)] == ["0s", "59s", "1m01s", "1h02m"]
    assert eta_text(0.25, 60) == "1m00s elapsed, ~3m00s left"
    assert eta_text(0.0, 5) == "5s elapsed"


def test_work_progress_weights_items_by_their_estimated_cost():
    clock = FakeClock()
    p = WorkProgress([3.0, 1.0], clock=clock)
    clock.t += 30
    line = p.finish(1)
    assert p.fraction == pytest.approx(0.25)
    assert line == "1/2 configurations, 25% of the estimated work, 30s elapsed, ~1m30s left"
    clock.t += 90
    assert p.finish(0).startswith("2/2 configurations, 100% of the estimated work, 2m00s elapsed")


def test_throttle_lets_one_line_through_per_interval():
    clock = FakeClock()
    t = Throttle(20, clock=clock)
    seen = []
    for _ in range(10):
        seen.append(t())
        clock.t += 5
    assert seen == [True, False, False, False, True, False, False, False, True, False]
    assert t(force=True)


def test_deep_and_augmented_configurations_cost_more():
    svm = estimated_cost(Config("rbf_svm", "engineered", "classical"))
    cnn = estimated_cost(Config("cnn2d_logmel", "logmel", "cnn2d", hyper={"epochs": 30}))
    cnn_aug = estimated_cost(
        Config(
            "cnn2d_logmel",
            "logmel",
            "cnn2d",
            augmented=True,
            hyper={"epochs": 30},
            augmentation=AugmentParams(n_copies=2),
        )
    )
    assert svm < cnn < cnn_aug


def test_epoch_hook_sees_every_epoch_of_a_keras_fit(rng):
    from tasks.models.keras_model import KerasClassifier, epoch_hook

    X = rng.normal(size=(24, 6)).astype(np.float32)
    y = np.arange(24) % 3
    calls = []
    with epoch_hook(lambda epoch, epochs, logs: calls.append((epoch, epochs, "loss" in logs))):
        est = KerasClassifier("mlp", epochs=3, batch_size=8, seed=0).fit(X, y)
    KerasClassifier("mlp", epochs=2, batch_size=8, seed=0).fit(X, y)  # hook closed: not called
    assert calls == [(1, 3, True), (2, 3, True), (3, 3, True)]
    proba = est.predict_proba(X[:5])
    assert proba.shape == (5, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(est.predict_proba(X)[:5], proba, atol=1e-6)  # any batch size, same function
