"""Small population optimizers from the book's ensemble chapter, maximizing a batched fitness on [0, 1]^d.

Every optimizer takes `fitness(X: (k, d)) -> (k,)` (higher is better), starts from a seeded
uniform population whose first member is the centre of the box, and returns
`(x_best, f_best, history)` with `history[t]` the best fitness after iteration `t`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import differential_evolution

Fitness = Callable[[np.ndarray], np.ndarray]
Proposal = Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]


def _initial(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """Uniform population with member 0 at the box centre (equal weights), so search starts no worse than it."""
    pop = rng.random((k, d))
    pop[0] = 0.5
    return pop


def _evolve(
    fitness: Fitness, propose: Proposal, *, d: int, k: int, n_iter: int, rng: np.random.Generator, greedy: bool
) -> tuple[np.ndarray, float, list[float]]:
    """The shared population loop: propose, clip to the box, evaluate, then keep (greedy) or replace."""
    pop = _initial(rng, k, d)
    fit = fitness(pop)
    i = int(np.argmax(fit))
    best_x, best_f = pop[i].copy(), float(fit[i])
    history = []
    for t in range(n_iter):
        cand = np.clip(propose(pop, fit, t / n_iter, rng), 0.0, 1.0)
        fc = fitness(cand)
        if greedy:
            better = fc > fit
            pop[better], fit[better] = cand[better], fc[better]
        else:
            pop, fit = cand, fc
        i = int(np.argmax(fit))
        if fit[i] > best_f:
            best_x, best_f = pop[i].copy(), float(fit[i])
        history.append(best_f)
    return best_x, best_f, history


def _bbpso(pop, fit, frac, rng):
    """Bare-bones PSO (Kennedy 2003): sample around the midpoint of personal and global best."""
    g = pop[np.argmax(fit)]
    return rng.normal((pop + g) / 2.0, np.abs(pop - g))


def _jaya(pop, fit, frac, rng):
    """Jaya (Rao 2016): move toward the best member and away from the worst."""
    best, worst = pop[np.argmax(fit)], pop[np.argmin(fit)]
    r1, r2 = rng.random(pop.shape), rng.random(pop.shape)
    return pop + r1 * (best - np.abs(pop)) - r2 * (worst - np.abs(pop))


def _ro(pop, fit, frac, rng, step: float = 0.1):
    """Random optimization (Matyas 1965): independent walkers taking Gaussian steps, kept if better."""
    return pop + rng.normal(0.0, step, pop.shape)


def _ga(pop, fit, frac, rng, mutation_rate: float | None = None, step: float = 0.1):
    """Real-coded GA: binary tournaments, blend crossover, Gaussian mutation, the best member kept."""
    k, d = pop.shape
    rate = 1.0 / d if mutation_rate is None else mutation_rate

    def tournament():
        a, b = rng.integers(0, k, size=(2, k))
        return pop[np.where(fit[a] >= fit[b], a, b)]

    p1, p2 = tournament(), tournament()
    mix = rng.random((k, d))
    child = mix * p1 + (1.0 - mix) * p2
    mutate = rng.random((k, d)) < rate
    child = child + mutate * rng.normal(0.0, step, (k, d))
    child[0] = pop[np.argmax(fit)]
    return child


class _GreyWolf:
    """Grey wolf optimizer (Mirjalili 2014): follow the three best wolves seen so far; `a` falls 2 -> 0."""

    def __init__(self):
        self.leaders = None
        self.leader_fit = None

    def __call__(self, pop, fit, frac, rng):
        if self.leaders is None:
            allx, allf = pop, fit
        else:
            allx, allf = np.vstack([self.leaders, pop]), np.concatenate([self.leader_fit, fit])
        top = np.argsort(-allf, kind="stable")[:3]
        self.leaders, self.leader_fit = allx[top].copy(), allf[top].copy()
        a = 2.0 * (1.0 - frac)
        moves = []
        for leader in self.leaders:
            A = 2.0 * a * rng.random(pop.shape) - a
            C = 2.0 * rng.random(pop.shape)
            moves.append(leader - A * np.abs(C * leader - pop))
        return np.mean(moves, axis=0)


def _de(
    fitness: Fitness, *, d: int, k: int, n_iter: int, rng: np.random.Generator
) -> tuple[np.ndarray, float, list[float]]:
    """scipy's differential evolution (best1bin), vectorized; no gradient polish on a step-shaped objective."""
    history: list[float] = []

    def record(intermediate_result):
        history.append(-float(intermediate_result.fun))

    res = differential_evolution(
        lambda X: -fitness(np.atleast_2d(X.T)),
        [(0.0, 1.0)] * d,
        maxiter=n_iter,
        popsize=max(1, -(-k // d)),
        rng=rng,
        polish=False,
        x0=np.full(d, 0.5),
        vectorized=True,
        updating="deferred",
        callback=record,
    )
    # scipy stops early once the population's fitness is uniform; the best then stays put.
    history += [history[-1] if history else -float(res.fun)] * (n_iter - len(history))
    return np.asarray(res.x), -float(res.fun), history


OPTIMIZERS = ("bbpso", "jaya", "de", "ro", "gwo", "ga")


def maximize(
    fitness: Fitness, d: int, *, method: str, n_particles: int = 20, n_iter: int = 200, seed: int = 0
) -> tuple[np.ndarray, float, list[float]]:
    """Maximize a batched fitness over [0, 1]^d with one of OPTIMIZERS; deterministic for a seed."""
    if method not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {method!r}; choose one of {', '.join(OPTIMIZERS)}")
    if n_particles < 2 or n_iter < 1:
        raise ValueError(f"need n_particles >= 2 and n_iter >= 1, got {n_particles} and {n_iter}")
    rng = np.random.default_rng(seed)
    if method == "de":
        return _de(fitness, d=d, k=n_particles, n_iter=n_iter, rng=rng)
    propose = {"bbpso": _bbpso, "jaya": _jaya, "ro": _ro, "ga": _ga, "gwo": _GreyWolf()}[method]
    return _evolve(
        fitness, propose, d=d, k=n_particles, n_iter=n_iter, rng=rng, greedy=method in ("bbpso", "jaya", "ro")
    )
