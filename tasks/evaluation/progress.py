"""How far a cross-validation is and how long is left: estimated costs, ETA text, throttled progress lines."""

from __future__ import annotations

import time
from typing import Callable

from tasks.records import Config

# Rough seconds per epoch (deep) or per configuration (classical) on 320 training clips, 2 cores
# (README, bench/train.py); only their ratios matter.
_PER_EPOCH_S = {"mlp": 0.3, "cnn1d": 0.5, "cnn2d": 1.4}
_CLASSICAL_S = 5.0
_DEEP_START_S = 20.0  # per deep configuration: TensorFlow's start, tracing, logging the fold-0 network


def duration_text(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_text(fraction_done: float, elapsed_s: float) -> str:
    """'1m10s elapsed, ~2m20s left' (the time left extrapolated from the share done so far)."""
    if fraction_done < 0.01:  # too little done to extrapolate from
        return f"{duration_text(elapsed_s)} elapsed"
    left = elapsed_s * (1 - min(fraction_done, 1.0)) / fraction_done
    return f"{duration_text(elapsed_s)} elapsed, ~{duration_text(left)} left"


def estimated_cost(config: Config) -> float:
    """Relative cost of cross-validating one configuration (family, epochs, augmented copies)."""
    from tasks.models import catalog

    meta = catalog.info(config.model)
    copies = 1 + (config.augmentation.n_copies if config.augmented and config.augmentation else 0)
    if meta.family in _PER_EPOCH_S:
        epochs = int({**meta.defaults, **config.hyper}.get("epochs", 10))
        return _DEEP_START_S + _PER_EPOCH_S[meta.family] * epochs * copies
    return _CLASSICAL_S * copies


class WorkProgress:
    """Share of the estimated work done as items finish, with the time left, for the flow's progress artifact."""

    def __init__(
        self, costs: list[float], *, unit: str = "configurations", clock: Callable[[], float] = time.monotonic
    ):
        self.costs = [max(float(c), 1e-9) for c in costs]
        self.unit = unit
        self.done: set[int] = set()
        self.clock = clock
        self.t0 = clock()

    @property
    def fraction(self) -> float:
        return sum(self.costs[i] for i in self.done) / sum(self.costs)

    def finish(self, index: int) -> str:
        """Mark item `index` done; returns '3/12 configurations, 45% of the estimated work, ... left'."""
        self.done.add(index)
        return (
            f"{len(self.done)}/{len(self.costs)} {self.unit}, {100 * self.fraction:.0f}% of the estimated "
            f"work, {eta_text(self.fraction, self.clock() - self.t0)}"
        )


class Throttle:
    """True at most once every `every_s` seconds (the first call, and the last when forced)."""

    def __init__(self, every_s: float, *, clock: Callable[[], float] = time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.last: float | None = None

    def __call__(self, force: bool = False) -> bool:
        now = self.clock()
        if force or self.last is None or now - self.last >= self.every_s:
            self.last = now
            return True
        return False
