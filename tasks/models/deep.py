"""Build a Keras estimator from a catalogue recipe (tasks/models/catalog.py)."""

from __future__ import annotations

import inspect


def make_deep(*, seed: int, **params):
    """A fresh KerasClassifier: training settings (epochs, ...) go to the estimator, anything else
    (kernel, widths, ...) to the network factory."""
    from tasks.models.keras_model import KerasClassifier

    accepted = set(inspect.signature(KerasClassifier).parameters)
    net = {**(params.pop("hyper", None) or {}), **{k: params.pop(k) for k in list(params) if k not in accepted}}
    return KerasClassifier(seed=seed, hyper=net, **params)
