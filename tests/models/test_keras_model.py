"""KerasClassifier: shapes, seeded reproducibility, grouped validation, save/load, training-only augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from tasks.models.keras_model import KerasClassifier, grouped_holdout, learning_curve_figure

TINY = {"widths": (4, 8, 8, 8)}
CLASSES = np.array(["dog", "rain", "rooster"])


@pytest.fixture(scope="module")
def logmels():
    """48 'log-mels' (n_mels=8, frames=24) whose class shows as a bright band, 2 clips per source."""
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(3), 16)
    X = rng.normal(size=(48, 8, 24)).astype(np.float32)
    for k in range(3):
        X[y == k, 2 * k : 2 * k + 2, :] += 3.0
    return X, CLASSES[y], np.repeat(np.arange(24), 2)


def _augmented(**overrides) -> KerasClassifier:
    params = dict(
        hyper=TINY,
        epochs=2,
        batch_size=8,
        seed=3,
        validation=0.25,
        spec_augment={"freq_width": 2, "time_width": 4},
        mixup_alpha=0.3,
        random_crop_frames=16,
        predict_crops=3,
    )
    return KerasClassifier("cnn2d_logmel", **{**params, **overrides})


@pytest.fixture(scope="module")
def fitted(logmels):
    X, y, groups = logmels
    return _augmented().fit(X, y, groups=groups)


def test_fit_sets_learned_attributes(fitted, logmels):
    X, y, _ = logmels
    assert set(fitted.classes_) == set(CLASSES)
    assert set(fitted.history_) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in fitted.history_.values())
    assert fitted.n_params_ == fitted.model_.count_params() > 0
    assert fitted.fit_seconds_ > 0
    proba = fitted.predict_proba(X)
    assert proba.shape == (48, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert set(fitted.predict(X)) <= set(CLASSES)


def test_init_only_stores_and_clones():
    est = KerasClassifier("mlp", {"hidden": (8,)}, epochs=3)
    assert not hasattr(est, "model_")
    assert clone(est).get_params() == est.get_params()


def test_same_seed_same_predictions(fitted, logmels):
    X, y, groups = logmels
    again = _augmented().fit(X, y, groups=groups)
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    assert again.history_ == fitted.history_


def test_predict_is_deterministic_and_unaugmented(fitted, logmels):
    """Masks, mixup and random crops are training-only: predict = mean softmax of fixed crops."""
    X, _, _ = logmels
    proba = fitted.predict_proba(X)
    np.testing.assert_array_equal(proba, fitted.predict_proba(X))
    scaled = ((X - fitted.mean_) / fitted.std_)[..., None]
    manual = np.mean([fitted.model_.predict(scaled[:, :, s : s + 16], verbose=0) for s in (0, 4, 8)], axis=0)
    np.testing.assert_allclose(proba, manual, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_grouped_holdout_keeps_groups_together(seed, fraction, rng):
    groups = rng.integers(0, 30, size=200)
    train, val = grouped_holdout(groups, fraction, seed)
    assert not set(groups[train]) & set(groups[val])
    assert sorted(np.concatenate([train, val])) == list(range(200))
    assert len(val) >= round(fraction * 200) and len(train) > 0


def test_fit_validation_uses_groups(logmels, monkeypatch):
    """The estimator's validation split is the grouped one: no source on both sides."""
    X, y, groups = logmels
    seen = {}

    def spy(g, fraction, seed):
        seen["split"] = grouped_holdout(g, fraction, seed)
        return seen["split"]

    monkeypatch.setattr("tasks.models.keras_model.grouped_holdout", spy)
    KerasClassifier("mlp", {"hidden": (8,)}, epochs=1, validation=0.25, seed=0).fit(X, y, groups=groups)
    train, val = seen["split"]
    assert len(val) and not set(groups[train]) & set(groups[val])


def test_trains_and_predicts_from_memory_mapped_rows_a_batch_at_a_time(logmels, tmp_path, monkeypatch):
    """Rows over .npy files on disk give the same model as the array in memory, and no read takes more than one
    batch for training (or one chunk for statistics and prediction)."""
    from tasks.models.rows import Rows, training_rows

    X, y, groups = logmels
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "X_aug.npy", X[:, None] + 0.01)
    on_disk = np.load(tmp_path / "X.npy", mmap_mode="r")
    aug = np.load(tmp_path / "X_aug.npy", mmap_mode="r")
    rows, yt, gt = training_rows(on_disk, y, groups, np.arange(40), aug)
    reads = []
    take = Rows.take
    monkeypatch.setattr(Rows, "take", lambda self, idx: reads.append(len(idx)) or take(self, idx))
    monkeypatch.setattr("tasks.models.keras_model._CHUNK_BYTES", 4 * 8 * 24 * 10)  # 10 samples per chunk
    streamed = _augmented(validation=0.0).fit(rows, yt, groups=gt)
    assert reads and max(reads) <= 10 and sum(reads) > 2 * len(rows)  # statistics pass, then 2 epochs of batches
    monkeypatch.setattr(Rows, "take", take)
    in_memory = _augmented(validation=0.0).fit(np.asarray(rows), yt, groups=gt)
    np.testing.assert_allclose(streamed.mean_, in_memory.mean_, rtol=1e-6)
    np.testing.assert_array_equal(
        streamed.predict_proba(Rows(on_disk, np.arange(40, 48))), in_memory.predict_proba(X[40:])
    )


def test_save_load_round_trip(fitted, logmels, tmp_path):
    X, _, _ = logmels
    path = fitted.save(tmp_path / "net.keras")
    assert path.with_suffix(".json").is_file()
    loaded = KerasClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    assert loaded.get_params() == json.loads(json.dumps(fitted.get_params()))  # tuples come back as lists


def test_training_augmentation_changes_batches():
    """The tf.data map crops, masks and mixes: soft labels, zeroed bands, shorter time axis."""
    est = _augmented(spec_augment={"freq_masks": 1, "freq_width": 4, "time_masks": 1, "time_width": 8})
    x = tf.ones((8, 8, 24, 1))
    y = tf.one_hot(tf.range(8) % 3, 3)
    est.crop_frames_ = est._crop_size((8, 24, 1))  # set by fit
    xa, ya = est._augment_fn(sample_ndim=3)(tf.constant(5, tf.int64), (x, y))
    assert xa.shape == (8, 8, 16, 1)
    assert np.any(xa.numpy() == 0.0)
    np.testing.assert_allclose(ya.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert np.any((ya.numpy() > 0) & (ya.numpy() < 1))


@pytest.mark.parametrize("arch,shape", [("cnn1d_shallow", (882,)), ("mlp", (12,))])
def test_other_architectures_fit(arch, shape, rng):
    X = rng.normal(size=(20, *shape)).astype(np.float32)
    y = np.arange(20) % 2
    est = KerasClassifier(arch, epochs=1, batch_size=8, schedule="constant").fit(X, y)
    assert est.predict_proba(X).shape == (20, 2)
    assert est.history_["val_loss"] == []


def test_full_input_prediction(logmels):
    X, y, _ = logmels
    est = KerasClassifier("cnn2d_logmel", TINY, epochs=1, batch_size=16, random_crop_frames=16, predict_crops=0).fit(
        X, y
    )
    assert est.input_shape_ == (8, None, 1)
    assert est.predict_proba(X).shape == (48, 3)


def test_bad_settings_raise(logmels):
    X, y, _ = logmels
    with pytest.raises(NotFittedError):
        KerasClassifier().predict(X)
    with pytest.raises(ValueError, match="unknown arch"):
        KerasClassifier("vgg").fit(X, y)
    with pytest.raises(ValueError, match="random_crop_frames"):
        KerasClassifier("cnn2d_logmel", TINY, epochs=1, random_crop_frames=99).fit(X, y)


def test_learning_curve_figure(fitted, tmp_path):
    fig = learning_curve_figure(fitted.history_)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2  # train and validation
    fig.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_input_pipelines_run_without_the_autotuner(logmels, monkeypatch):
    """tf.data's autotuning thread sleeps up to 60 s between rounds and deleting an iterator waits for it (CNN folds
    sat idle up to 55 s after their last epoch): the training and validation datasets turn it off."""
    import keras

    X, y, groups = logmels
    seen = []
    fit = keras.Model.fit

    def spy(self, x=None, *args, validation_data=None, **kwargs):
        seen.extend(d for d in (x, validation_data) if d is not None)
        return fit(self, x, *args, validation_data=validation_data, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    _augmented(epochs=1).fit(X, y, groups=groups)
    assert len(seen) == 2 and all(d.options().autotune.enabled is False for d in seen)
