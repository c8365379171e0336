"""Every model by name: its family, the representations it accepts (declared here), and a factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tasks.models.classical import CLASSICAL, make_classical

VECTORS = ("raw", "engineered", "birdnet")  # one vector per segment
SPECTROGRAMS = ("logmel", "logmel_deltas", "mfcc", "pcen")
BOOK_KERNELS = (3, 5, 7, 9, 11, 13, 15, 33)
CNN1D_ARCHS = ("shallow", "medium", "deep0", "deep1", "deep2")


@dataclass(frozen=True)
class ModelInfo:
    family: str  # classical | mlp | cnn1d | cnn2d
    features: tuple[str, ...]  # representations it can train on
    defaults: dict[str, Any] = field(default_factory=dict)  # training recipe and hyper-parameters (overridable)


# The book's recipe (Adam, fixed learning rate, batch 32, 16 epochs), validation carved from training folds.
_BOOK_1D = dict(epochs=16, batch_size=32, learning_rate=1e-3, schedule="constant", validation=0.1, standardize=False)
_BOOK_2D = dict(
    arch="cnn2d_book",
    epochs=16,
    batch_size=16,
    learning_rate=1e-3,
    schedule="constant",
    validation=0.1,
    standardize=False,
)
# The compact log-mel CNN's calibrated recipe (bench/train.py); its random crop defaults to 80% of the window's
# frames (random_crop_frames=None), so it follows the dataset's window length.
_LOGMEL = dict(
    arch="cnn2d_logmel",
    epochs=30,
    batch_size=16,
    learning_rate=2e-3,
    schedule="cosine",
    warmup_frac=0.05,
    validation=0.0,
    spec_augment={"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 20},
    mixup_alpha=0.3,
    random_crop_frac=0.8,
    predict_crops=0,
    pooling="time_stats",
)

CATALOG: dict[str, ModelInfo] = {name: ModelInfo("classical", VECTORS) for name in CLASSICAL}
CATALOG["mlp_sklearn"] = ModelInfo("mlp", VECTORS)
CATALOG["mlp_keras"] = ModelInfo(
    "mlp",
    ("engineered", "raw", "birdnet"),
    dict(arch="mlp", epochs=100, batch_size=32, learning_rate=1e-3, schedule="cosine", validation=0.1),
)
for _arch in CNN1D_ARCHS:
    for _k in BOOK_KERNELS:
        CATALOG[f"cnn1d_{_arch}_k{_k}"] = ModelInfo(
            "cnn1d", ("raw",), dict(arch=f"cnn1d_{_arch}", hyper={"kernel": _k}, **_BOOK_1D)
        )
for _k in (3, 7):
    CATALOG[f"cnn2d_book_k{_k}"] = ModelInfo("cnn2d", ("book_image",), dict(hyper={"kernel": _k}, **_BOOK_2D))
CATALOG["cnn2d_logmel"] = ModelInfo("cnn2d", SPECTROGRAMS, _LOGMEL)


def accepts(model: str, features: str) -> bool:
    """True if `model` trains on representation `features`."""
    return features in info(model).features


def info(model: str) -> ModelInfo:
    """The catalogue entry of `model`; KeyError naming the choices."""
    if model not in CATALOG:
        raise KeyError(f"unknown model {model!r}; choose from {sorted(CATALOG)}")
    return CATALOG[model]


def model_entry(entry: str) -> tuple[str, str | None]:
    """("name", None) for "name", ("name", "features") for "name/features"; ValueError naming a bad entry."""
    model, _, only = entry.partition("/")
    try:
        meta = info(model)
    except KeyError as exc:
        raise ValueError(f"model entry {entry!r}: {exc.args[0]}") from exc
    if only and only not in meta.features:
        raise ValueError(f"model entry {entry!r}: {model} trains on {list(meta.features)}, not {only!r}")
    return model, only or None


def make(model: str, *, seed: int, n_jobs: int = 1, hyper: dict | None = None) -> Callable[[], object]:
    """A zero-argument factory of fresh estimators for the CV engine."""
    meta = info(model)
    if not meta.defaults:  # scikit-learn models
        return lambda: make_classical(model, seed=seed, n_jobs=n_jobs)
    from tasks.models.deep import make_deep  # TensorFlow is slow to import: only when a Keras model is made

    params = {**meta.defaults, **(hyper or {})}
    return lambda: make_deep(seed=seed, **params)
