"""Every model by name: its family, the representations it accepts, and a factory."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tasks.models.classical import CLASSICAL, make_classical

VECTORS = ("raw", "engineered", "birdnet")


@dataclass(frozen=True)
class ModelInfo:
    family: str                      # classical | mlp | cnn1d | cnn2d
    features: tuple[str, ...]        # representations it can train on
    defaults: dict[str, Any] = field(default_factory=dict)   # hyper-parameters (overridable)


CATALOG: dict[str, ModelInfo] = {name: ModelInfo("classical", VECTORS) for name in CLASSICAL}
CATALOG["mlp_sklearn"] = ModelInfo("mlp", VECTORS)


def register_deep(name: str, family: str, features: tuple[str, ...], **defaults) -> None:
    """Add a Keras model to the catalogue (called by tasks.models.deep)."""
    CATALOG[name] = ModelInfo(family, features, dict(defaults))


def accepts(model: str, features: str) -> bool:
    """True if `model` trains on representation `features`."""
    return features in info(model).features


def info(model: str) -> ModelInfo:
    if model not in CATALOG:
        _load_deep()
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
    if meta.family in ("classical",) or model == "mlp_sklearn":
        return lambda: make_classical(model, seed=seed, n_jobs=n_jobs)
    from tasks.models.deep import make_deep

    params = {**meta.defaults, **(hyper or {})}
    return lambda: make_deep(model, seed=seed, **params)


def _load_deep() -> None:
    """Deep models register themselves on import (kept lazy: TensorFlow is slow to import)."""
    import tasks.models.deep  # noqa: F401
