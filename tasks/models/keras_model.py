"""A scikit-learn-style classifier around the Keras nets: seeded tf.data training, crops, SpecAugment, mixup.

Training-only randomness (shuffling, random crops, SpecAugment masks, mixup) is drawn from
stateless TF random ops seeded by (seed, step), so a fit is reproducible and predict is
deterministic. Nothing here touches MLflow; keep fitted estimators inside one task and pass
the `.keras` path that `save` writes.

Threads: TensorFlow's defaults use every core (on 2 cores, pinning one thread was 1.5x
slower). To share a machine, set before TF starts: TF_NUM_INTRAOP_THREADS (threads inside an
op), TF_NUM_INTEROP_THREADS (ops run in parallel), OMP_NUM_THREADS (oneDNN kernels);
TF_ENABLE_ONEDNN_OPTS=0 trades speed for bit-identical results across CPUs.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

from tasks.runtime import start_tensorflow_quietly

start_tensorflow_quietly()  # before keras imports TensorFlow: its start-up lines filtered out
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from tasks.models.nets import MODEL_NAMES, build_model  # noqa: E402
from tasks.models.rows import BLOCK_BYTES, Rows  # noqa: E402

_CHUNK_BYTES = BLOCK_BYTES

# Keras' global state (layer-name counters, clear_session) is per process, not per thread: two
# trainings in parallel threads collide ("name 'dense' is used 2 times"), and TensorFlow already
# uses both cores, so Keras work in this process runs one estimator at a time.
_KERAS_LOCK = threading.RLock()

# One compiled forward pass per fitted Keras model (see KerasClassifier._forward_batches).
_FORWARD: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

# Called after every training epoch as fn(epoch, epochs, logs) while `epoch_hook(fn)` is open (progress lines).
_EPOCH_HOOKS: list = []


@contextmanager
def epoch_hook(fn):
    """While open, every fit in this process calls fn(epoch (1-based), epochs, logs) after each epoch."""
    _EPOCH_HOOKS.append(fn)
    try:
        yield fn
    finally:
        _EPOCH_HOOKS.remove(fn)


class _EpochHooks(keras.callbacks.Callback):
    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        for fn in list(_EPOCH_HOOKS):
            fn(epoch + 1, self.epochs, dict(logs or {}))


SCHEDULES = ("constant", "cosine")
_SPEC_AUGMENT_DEFAULTS = {"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 20}


@contextmanager
def _own_layer_seeds(seed: int):
    """Keras draws unseeded layers' initializer and dropout seeds from Python's global `random`, which other
    threads of the process (Prefect's) draw from too: the same seed then gave different weights now and then.
    During a build, Keras draws from a generator of its own, seeded by `seed`."""
    from keras.src.random import seed_generator

    saved = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = saved


def grouped_holdout(groups, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) with about `fraction` of the samples held out, whole groups at a time."""
    groups = np.asarray(groups)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError("a grouped validation split needs at least two groups")
    order = np.random.default_rng(seed).permutation(unique)
    target = max(1, round(fraction * len(groups)))
    counts = {g: c for g, c in zip(*np.unique(groups, return_counts=True))}
    held, n_held = [], 0
    for g in order[:-1]:  # at least one group stays in training
        if n_held >= target:
            break
        held.append(g)
        n_held += counts[g]
    is_val = np.isin(groups, held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def learning_curve_figure(history: dict) -> Figure:
    """Loss and accuracy per epoch, training and validation, as a pyplot-free (Agg) Figure."""
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + key) or []
            if len(values):
                ax.plot(np.arange(1, len(values) + 1), values, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


class KerasClassifier(ClassifierMixin, BaseEstimator):
    """Train one net from `tasks.models.nets` on arrays or Rows; fit/predict/predict_proba like scikit-learn.

    X is (n, length) or (n, length, 1) for 1D nets, (n, height, width[, channels]) for 2D nets
    (log-mels: (n, n_mels, frames)), (n, features) for the MLP. The time axis (cropped, masked)
    is the frames axis of 2D inputs and the first axis of 1D inputs.

    - schedule: "constant", or "cosine" = linear warm-up over `warmup_frac` of all optimizer
      steps, then cosine decay to 0.
    - validation: fraction of the training samples held out, whole `groups` at a time (pass the
      Freesound source id; without groups every sample is its own group, which leaks for ESC-10).
    - standardize: subtract one mean and divide by one std, both from the training samples.
    - spec_augment: None or dict(freq_masks, freq_width, time_masks, time_width) (widths in bins/
      frames); masked values are set to 0 (the mean, once standardized). Training batches only.
    - mixup_alpha: Beta(alpha, alpha) mixing of training pairs; 0 turns it off.
    - random_crop_frac: train on random crops of this fraction of the input's frames (0: no crops), so the
      crop follows the window length; random_crop_frames, if set, fixes the crop in frames instead.
    - random_crop_frames: None, or train on random crops of that many frames; predict then averages
      the softmax over `predict_crops` evenly spaced crops, or (predict_crops=0) runs the full input,
      which needs a net without Flatten (cnn2d_logmel, built with a variable-length time axis).
    """

    reads_rows = True  # fit and predict_proba read Rows batch by batch (tasks/models/rows.py)

    def __init__(
        self,
        arch: str = "cnn2d_logmel",
        hyper: dict | None = None,
        *,
        epochs: int = 100,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        schedule: str = "cosine",
        warmup_frac: float = 0.05,
        seed: int = 0,
        validation: float = 0.0,
        standardize: bool = True,
        spec_augment: dict | None = None,
        mixup_alpha: float = 0.0,
        random_crop_frames: int | None = None,
        random_crop_frac: float = 0.0,
        predict_crops: int = 5,
        verbose: int = 0,
    ):
        self.arch = arch
        self.hyper = hyper
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.warmup_frac = warmup_frac
        self.seed = seed
        self.validation = validation
        self.standardize = standardize
        self.spec_augment = spec_augment
        self.mixup_alpha = mixup_alpha
        self.random_crop_frames = random_crop_frames
        self.random_crop_frac = random_crop_frac
        self.predict_crops = predict_crops
        self.verbose = verbose

    # ---- fitting -------------------------------------------------------------------------
    def fit(self, X, y, *, groups=None) -> "KerasClassifier":
        """Train a fresh model on (X, y) (one Keras training per process at a time)."""
        with _KERAS_LOCK:
            return self._fit(X, y, groups=groups)

    def _fit(self, X, y, *, groups=None) -> "KerasClassifier":
        """Train a fresh model on (X, y); `groups` keeps each source on one side of the validation split.

        X is an array or Rows (memory-mapped files): batches are read as training needs them, and the
        standardization statistics are accumulated chunk by chunk, so memory follows the batch size.
        Clears the Keras session, seeds Python/NumPy/TF globally (keras.utils.set_random_seed) and
        turns on TF op determinism for the whole process (measured: no extra CPU time here).
        """
        self._check_params()
        start = time.perf_counter()
        rows = X if isinstance(X, Rows) else Rows.of(np.asarray(X, dtype=np.float32))
        y = np.asarray(y)
        if len(rows) != len(y):
            raise ValueError(f"X has {len(rows)} samples but y has {len(y)}")
        if not len(rows):
            raise ValueError("X has no samples")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)

        if self.validation:
            groups = np.arange(len(y)) if groups is None else np.asarray(groups)
            if len(groups) != len(y):
                raise ValueError(f"groups has {len(groups)} entries but y has {len(y)}")
            train_idx, val_idx = grouped_holdout(groups, self.validation, self.seed)
        else:
            train_idx, val_idx = np.arange(len(y)), np.arange(0)
        self.mean_, self.std_ = self._statistics(rows, train_idx)
        sample_shape = self._as_model_input(rows.take([0])).shape[1:]

        keras.backend.clear_session()
        keras.utils.set_random_seed(int(self.seed))
        tf.config.experimental.enable_op_determinism()
        self.crop_frames_ = self._crop_size(sample_shape)
        self.input_shape_ = self._model_input_shape(sample_shape)
        with _own_layer_seeds(int(self.seed)):
            model = build_model(self.arch, self.input_shape_, n_classes, **(self.hyper or {}))
        steps_per_epoch = math.ceil(len(train_idx) / self.batch_size)
        model.compile(
            optimizer=keras.optimizers.Adam(self._learning_rate(steps_per_epoch * self.epochs)),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )

        val_data = None
        if len(val_idx):
            val_data = self._validation_dataset(rows.subset(val_idx), y_idx[val_idx], n_classes, sample_shape)
        hist = model.fit(
            self._train_dataset(rows.subset(train_idx), y_idx[train_idx], n_classes, sample_shape),
            epochs=self.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=val_data,
            shuffle=False,
            verbose=self.verbose,
            callbacks=[_EpochHooks(self.epochs)] if _EPOCH_HOOKS else None,
        )

        self.model_ = model
        self.history_ = {
            k: [float(v) for v in hist.history.get(k, [])] for k in ("loss", "accuracy", "val_loss", "val_accuracy")
        }
        self.n_params_ = int(model.count_params())
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _statistics(self, rows: Rows, train_idx: np.ndarray) -> tuple:
        """Standardization mean and std of the training samples (per column for the MLP's vectors, else one of
        each), accumulated chunk by chunk in float64; raises on a NaN or infinite value in any sample."""
        is_train = np.zeros(len(rows), bool)
        is_train[train_idx] = True
        per_column = self.arch == "mlp" and rows.ndim == 2
        shift, total, squares, count = None, 0.0, 0.0, 0
        for idx in _chunks(rows):
            x = rows.take(idx)
            if not np.isfinite(x).all():
                raise ValueError(
                    f"X contains NaN or infinite values (samples {idx[0]}-{idx[-1]}); clean the features before fitting"
                )
            x = x[is_train[idx]].astype(np.float64)
            if not self.standardize or not len(x):
                continue
            x = x.reshape(len(x), -1) if per_column else x.reshape(-1)
            if shift is None:  # sums around a first estimate of the mean: no cancellation in the variance
                shift = x.mean(axis=0)
            total = total + (x - shift).sum(axis=0)
            squares = squares + ((x - shift) ** 2).sum(axis=0)
            count += len(x)
        if not self.standardize:
            return 0.0, 1.0
        mean = shift + total / count
        std = np.sqrt(np.maximum(squares / count - (total / count) ** 2, 0.0))
        if per_column:
            return mean.astype(np.float32).tolist(), np.where(std > 0, std, 1.0).astype(np.float32).tolist()
        return float(mean), float(std) or 1.0

    def _check_params(self) -> None:
        if self.arch not in MODEL_NAMES:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")

    def _learning_rate(self, total_steps: int):
        if self.schedule == "constant":
            return float(self.learning_rate)
        warmup = int(round(self.warmup_frac * total_steps))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.05 * self.learning_rate if warmup else self.learning_rate,
            decay_steps=max(1, total_steps - warmup),
            alpha=0.0,
            warmup_target=float(self.learning_rate) if warmup else None,
            warmup_steps=warmup,
        )

    def _train_dataset(self, rows: Rows, y_idx: np.ndarray, n_classes: int, sample_shape: tuple) -> tf.data.Dataset:
        """Batches in a seeded random order per epoch, scaled, then augmented per batch (seeded by (seed, batch
        number)). Samples are read from `rows` in blocks of whole batches (about _CHUNK_BYTES each) that TensorFlow
        cuts into batches: one Python call per block, and only a block or two in memory at a time.

        Blocks come through tf.numpy_function over a block counter, not Dataset.from_generator: the generator op
        sets glibc's M_TRIM_THRESHOLD to 128 kB for the whole process ("Memory patch applied"), after which every
        training step maps and unmaps its buffers; the log-mel CNN's epochs took twice as long (measured here)."""
        onehot = np.eye(n_classes, dtype=np.float32)
        seed, size, n = int(self.seed), self.batch_size, len(rows)
        per_sample = 4 * int(np.prod(sample_shape, dtype=np.int64))
        block = size * max(1, _CHUNK_BYTES // max(per_sample * size, 1))
        per_epoch = math.ceil(n / block)  # an epoch's last block holds its last (short) batch
        epoch_order: dict[int, np.ndarray] = {}

        def read_block(k) -> tuple[np.ndarray, np.ndarray]:
            epoch, b = divmod(int(k), per_epoch)
            if epoch not in epoch_order:
                epoch_order.clear()
                epoch_order[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
            idx = epoch_order[epoch][b * block : (b + 1) * block]
            return self._scale(self._as_model_input(rows.take(idx))), onehot[y_idx[idx]]

        ds = tf.data.Dataset.counter().map(lambda k: self._read(read_block, k, sample_shape, n_classes))
        ds = ds.flat_map(lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(size))
        ds = tf.data.Dataset.zip(tf.data.Dataset.counter(), ds).map(self._augment_fn(len(sample_shape)))
        return _without_autotuning(ds.prefetch(2))

    def _validation_dataset(self, rows: Rows, y_idx: np.ndarray, n_classes: int, sample_shape: tuple):
        """The held-out training samples in order, scaled and centre-cropped like training inputs."""
        onehot, size = np.eye(n_classes, dtype=np.float32), max(self.batch_size, 64)

        def read_batch(k) -> tuple[np.ndarray, np.ndarray]:
            idx = np.arange(int(k) * size, min((int(k) + 1) * size, len(rows)))
            x = self._scale(self._as_model_input(rows.take(idx)))
            return (self._crops(x, 1)[0] if self.crop_frames_ else x), onehot[y_idx[idx]]

        shape = list(sample_shape)
        if self.crop_frames_:
            shape[self._time_axis(len(sample_shape))] = self.crop_frames_
        n_batches = math.ceil(len(rows) / size)
        return _without_autotuning(
            tf.data.Dataset.range(n_batches).map(lambda k: self._read(read_batch, k, tuple(shape), n_classes))
        )

    @staticmethod
    def _read(fn, k, sample_shape: tuple, n_classes: int) -> tuple:
        """fn(k) -> (x, y) arrays, called from the tf.data pipeline, with the shapes Keras needs."""
        x, y = tf.numpy_function(fn, [k], (tf.float32, tf.float32), stateful=True)
        x.set_shape((None, *sample_shape))
        y.set_shape((None, n_classes))
        return x, y

    def _augment_fn(self, sample_ndim: int):
        time_axis = self._time_axis(sample_ndim) + 1
        freq_axis = 1 if sample_ndim == 3 else None
        crop = self.crop_frames_
        spec = None if self.spec_augment is None else {**_SPEC_AUGMENT_DEFAULTS, **self.spec_augment}
        alpha = float(self.mixup_alpha)
        seed = int(self.seed)

        def augment(step, batch):
            x, y = batch
            seeds = tf.unstack(tf.random.split(tf.stack([tf.constant(seed, tf.int64), step]), 4))
            if crop:
                x = _random_crop(x, crop, time_axis, seeds[0])
            if spec:
                x = _mask(x, time_axis, spec["time_masks"], spec["time_width"], seeds[1])
                if freq_axis is not None:
                    x = _mask(x, freq_axis, spec["freq_masks"], spec["freq_width"], seeds[2])
            if alpha > 0:
                x, y = _mixup(x, y, alpha, seeds[3])
            return x, y

        return augment

    # ---- prediction ----------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """Softmax probabilities (n, n_classes), float32 (serialized with training, see _KERAS_LOCK)."""
        with _KERAS_LOCK:
            return self._predict_proba(X)

    def _predict_proba(self, X) -> np.ndarray:
        """Softmax probabilities (n, n_classes), float32; averaged over evenly spaced crops if cropping.

        X is an array or Rows, read a chunk at a time."""
        check_is_fitted(self, "model_")
        rows = X if isinstance(X, Rows) else Rows.of(np.asarray(X, dtype=np.float32))
        out = [self._predict_chunk(rows.take(idx)) for idx in _chunks(rows)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), np.float32)

    def network_input(self, X) -> np.ndarray:
        """What the network itself sees for features X: scaled, with a channel axis, one crop when it
        crops (an input example for the logged Keras model)."""
        check_is_fitted(self, "model_")
        x = self._scale(self._as_model_input(np.asarray(X, dtype=np.float32)))
        return self._crops(x, 1)[0] if self.crop_frames_ and self.predict_crops else x

    def _predict_chunk(self, x: np.ndarray) -> np.ndarray:
        X = self._scale(self._as_model_input(x))
        if self.crop_frames_ and self.predict_crops:
            crops = self._crops(X, self.predict_crops)
            probs = self._forward_batches(np.concatenate(crops))
            return probs.reshape(len(crops), len(X), -1).mean(axis=0).astype(np.float32)
        return self._forward_batches(X)

    def _forward_batches(self, X: np.ndarray) -> np.ndarray:
        """The model's softmax over X in batches, through one compiled function per fitted model.

        keras' predict() traces its function again for each new input shape (a fold's last, smaller batch,
        the crops), and TensorFlow then warns about retracing on every fold; a concrete function with an
        unknown batch size is traced once, when the model is first used."""
        forward = _FORWARD.get(self.model_)
        if forward is None:
            model = self.model_
            spec = tf.TensorSpec((None, *self.input_shape_), tf.float32)
            forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
            _FORWARD[self.model_] = forward
        batch = max(self.batch_size, 64)
        out = [forward(tf.constant(X[i : i + batch])).numpy() for i in range(0, len(X), batch)]
        n_classes = len(self.classes_)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, n_classes), np.float32)

    def predict(self, X) -> np.ndarray:
        """Most probable class label per sample."""
        proba = self.predict_proba(X)  # raises NotFittedError before touching classes_
        return self.classes_[np.argmax(proba, axis=1)]

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the model to `path` (.keras) and settings + standardization stats beside it (.json)."""
        check_is_fitted(self, "model_")
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"{path}: the model file must end in .keras")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model_.save(path)
        state = {
            "params": self.get_params(),
            "classes": self.classes_.tolist(),
            "mean": self.mean_,
            "std": self.std_,
            "input_shape": list(self.input_shape_),
            "crop_frames": self.crop_frames_,
            "history": self.history_,
            "n_params": self.n_params_,
            "fit_seconds": self.fit_seconds_,
        }
        path.with_suffix(".json").write_text(json.dumps(state, indent=2))
        return path

    @classmethod
    def load(cls, path) -> "KerasClassifier":
        """Rebuild a fitted classifier from the .keras file and its .json sidecar written by `save`."""
        path = Path(path)
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            raise FileNotFoundError(f"{path}: need both {path.name} and {sidecar.name} (written by save)")
        state = json.loads(sidecar.read_text())
        est = cls(**state["params"])
        est.model_ = keras.saving.load_model(path)
        est.classes_ = np.asarray(state["classes"])
        est.mean_, est.std_ = state["mean"], state["std"]
        est.input_shape_ = tuple(state["input_shape"])
        est.crop_frames_ = state.get("crop_frames", est.random_crop_frames)
        est.history_, est.n_params_, est.fit_seconds_ = state["history"], state["n_params"], state["fit_seconds"]
        return est

    # ---- array helpers -------------------------------------------------------------------
    def _as_model_input(self, X: np.ndarray) -> np.ndarray:
        """Add the channel axis the conv nets expect: (n, L) -> (n, L, 1), (n, H, W) -> (n, H, W, 1)."""
        if (self.arch.startswith("cnn1d") and X.ndim == 2) or (self.arch.startswith("cnn2d") and X.ndim == 3):
            return X[..., None]
        return X

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return ((X - np.asarray(self.mean_, np.float32)) / np.asarray(self.std_, np.float32)).astype(np.float32)

    @staticmethod
    def _time_axis(sample_ndim: int) -> int:
        return 1 if sample_ndim == 3 else 0

    def _crop_size(self, sample_shape: tuple) -> int | None:
        """Frames per training crop: random_crop_frames, else random_crop_frac of the input's frames."""
        if not (self.random_crop_frames or self.random_crop_frac) or self.arch == "mlp":
            return None
        frames = sample_shape[self._time_axis(len(sample_shape))]
        if self.random_crop_frames:
            if self.random_crop_frames > frames:
                raise ValueError(
                    f"random_crop_frames={self.random_crop_frames} exceeds the input's "
                    f"{frames} frames; lower it or use a longer --window-s"
                )
            return int(self.random_crop_frames)
        if not 0 < self.random_crop_frac <= 1:
            raise ValueError(f"random_crop_frac must be in (0, 1], got {self.random_crop_frac}")
        size = int(round(self.random_crop_frac * frames))
        if size < 8:
            raise ValueError(
                f"random_crop_frac={self.random_crop_frac} of {frames} frames leaves {size}: "
                "use a longer --window-s or a smaller hop_length"
            )
        return size

    def _model_input_shape(self, sample_shape: tuple) -> tuple:
        if not self.crop_frames_:
            return tuple(sample_shape)
        axis = self._time_axis(len(sample_shape))
        shape = list(sample_shape)
        shape[axis] = None if self.predict_crops == 0 else self.crop_frames_
        return tuple(shape)

    def _crops(self, X: np.ndarray, n_crops: int) -> list[np.ndarray]:
        """`n_crops` evenly spaced crops of random_crop_frames along the time axis (one = centre)."""
        axis = self._time_axis(X.ndim - 1) + 1
        length, size = X.shape[axis], self.crop_frames_
        if size > length:
            raise ValueError(f"input has {length} frames, fewer than the training crop of {size}")
        starts = [(length - size) // 2] if n_crops == 1 else np.linspace(0, length - size, n_crops).round().astype(int)
        return [np.take(X, np.arange(s, s + size), axis=axis) for s in starts]


def _chunks(rows: Rows):
    """Consecutive position arrays covering `rows`, about _CHUNK_BYTES of float32 samples each."""
    per_sample = 4 * int(np.prod(rows.shape[1:], dtype=np.int64))
    size = max(1, _CHUNK_BYTES // max(per_sample, 1))
    for start in range(0, len(rows), size):
        yield np.arange(start, min(start + size, len(rows)))


def _without_autotuning(ds: "tf.data.Dataset") -> "tf.data.Dataset":
    """The dataset with tf.data's autotuning off (fixed buffers, a sequential map; a worker has one core anyway).

    The autotuner's thread sleeps up to 60 s between rounds, and deleting the iterator at the end of fit waits for it
    to wake, holding the GIL: in the default run, CNN folds went idle for up to 55 s after their last epoch."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _random_crop(x: tf.Tensor, size: int, axis: int, seed: tf.Tensor) -> tf.Tensor:
    """One random window of `size` along `axis` per sample."""
    n, length = tf.shape(x)[0], tf.shape(x)[axis]
    start = tf.random.stateless_uniform([n], seed, minval=0, maxval=length - size + 1, dtype=tf.int32)
    idx = start[:, None] + tf.range(size)[None, :]
    return tf.gather(x, idx, axis=axis, batch_dims=1)


def _mask(x: tf.Tensor, axis: int, n_masks: int, max_width: int, seed: tf.Tensor) -> tf.Tensor:
    """SpecAugment: zero `n_masks` bands of 0..max_width bins along `axis`, independently per sample."""
    if n_masks <= 0 or max_width <= 0:
        return x
    n, size = tf.shape(x)[0], tf.shape(x)[axis]
    s1, s2 = tf.unstack(tf.random.split(seed, 2))
    width = tf.random.stateless_uniform([n, n_masks], s1, minval=0, maxval=max_width + 1, dtype=tf.int32)
    width = tf.minimum(width, size)
    start = tf.cast(tf.random.stateless_uniform([n, n_masks], s2) * tf.cast(size - width + 1, tf.float32), tf.int32)
    pos = tf.range(size)[None, None, :]
    hit = (pos >= start[..., None]) & (pos < (start + width)[..., None])
    keep = 1.0 - tf.cast(tf.reduce_any(hit, axis=1), x.dtype)  # (n, size)
    shape = [-1] + [1] * (x.shape.rank - 1)
    shape[axis] = size
    return x * tf.reshape(keep, shape)


def _mixup(x: tf.Tensor, y: tf.Tensor, alpha: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix each sample with a random partner of the batch, weight ~ Beta(alpha, alpha)."""
    n = tf.shape(x)[0]
    s1, s2, s3 = tf.unstack(tf.random.split(seed, 3))
    g1 = tf.random.stateless_gamma([n], s1, alpha=alpha)
    g2 = tf.random.stateless_gamma([n], s2, alpha=alpha)
    lam = g1 / (g1 + g2 + 1e-12)
    perm = tf.argsort(tf.random.stateless_uniform([n], s3))
    lam_x = tf.reshape(lam, [-1] + [1] * (x.shape.rank - 1))
    x = lam_x * x + (1.0 - lam_x) * tf.gather(x, perm)
    y = lam[:, None] * y + (1.0 - lam[:, None]) * tf.gather(y, perm)
    return x, y
