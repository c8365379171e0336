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
    np.testing.assert_allclose(train(0), outs[0], rtol=1e-5, atol=1e-6)  # same seed, same result in any thread


def test_same_seed_same_model_while_another_thread_draws_from_python_random(rng):
    import random
    import threading
    import time

    X = rng.normal(size=(40, 12)).astype("float32")
    y = np.repeat(np.arange(4), 10)
    stop = threading.Event()

    def noise():  # e.g. Prefect's threads: they share Python's global generator with Keras
        while not stop.is_set():
            random.random()
            time.sleep(1e-4)

    def train():
        return KerasClassifier("mlp", epochs=1, batch_size=8, schedule="constant", seed=3).fit(X, y).predict_proba(X)

    thread = threading.Thread(target=noise, daemon=True)
    thread.start()
    try:
        first, second = train(), train()
    finally:
        stop.set()
        thread.join()
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
