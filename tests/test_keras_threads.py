"""The flow trains models in two threads: Keras trainings there must not collide."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tasks.models.keras_model import KerasClassifier


def test_two_keras_trainings_in_parallel_threads(rng):
    X = rng.normal(size=(40, 12)).astype("float32")
    y = np.repeat(np.arange(4), 10)

    def train(seed):
        est = KerasClassifier("mlp", epochs=2, batch_size=8, schedule="constant", seed=seed).fit(X, y)
        return est.predict_proba(X)

    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(train, [0, 1, 2, 3]))
    assert all(p.shape == (40, 4) and np.allclose(p.sum(1), 1, atol=1e-5) for p in outs)
    np.testing.assert_allclose(train(0), outs[0], rtol=1e-5, atol=1e-6)   # same seed, same result in any thread
