"""A fitted estimator on disk in its own format: Keras classifiers save themselves, everything else is joblib."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def estimator_format(estimator: Any) -> tuple[str, str | None]:
    """('keras', 'module:Class') for estimators with their own save/load (KerasClassifier), else ('joblib', None)."""
    cls = type(estimator)
    if callable(getattr(estimator, "save", None)) and callable(getattr(cls, "load", None)):
        return "keras", f"{cls.__module__}:{cls.__qualname__}"
    return "joblib", None


def save_estimator(estimator: Any, folder: Path) -> tuple[str, str | None]:
    """Write a fitted estimator into `folder` in its own format; returns (format, class) for load_estimator."""
    fmt, cls = estimator_format(estimator)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "keras":
        estimator.save(folder / "estimator.keras")  # writes estimator.keras + estimator.json
    else:
        import joblib

        joblib.dump(estimator, folder / "estimator.joblib")
    return fmt, cls


def load_estimator(folder: Path, cfg: dict) -> Any:
    """The estimator save_estimator wrote; cfg holds its estimator_format and estimator_class."""
    if cfg.get("estimator_format") == "keras":
        module, name = cfg["estimator_class"].split(":")
        return getattr(importlib.import_module(module), name).load(folder / "estimator.keras")
    import joblib

    return joblib.load(folder / "estimator.joblib")
