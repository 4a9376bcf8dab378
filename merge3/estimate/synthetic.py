"""Synthetic ground truth for validating IRT fits and estimators: known θ, α, β, true accuracy.

Items come from a multidimensional 2PL over several tasks; each task leans on its own direction
of the latent space (so endpoints can be good at different tasks). Two regimes:
``realistic`` (|α| ≈ 1, β ~ N(0, 1)) and ``sharp`` (|α| ≈ 4, β ~ N(0, 5²)).
True accuracy of a model on a task = mean over the task's items of the true P(correct).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from merge3.estimate.itembank import ItemBank
from merge3.estimate.responses import ResponseMatrix

REGIMES = {"realistic": (1.0, 1.0), "sharp": (4.0, 5.0)}


@dataclass
class World:
    """True item parameters of ``n_tasks`` tasks (items listed task by task)."""

    alpha: np.ndarray  # (I, D), positive
    beta: np.ndarray  # (I,)
    tasks: tuple[str, ...]
    items: tuple[str, ...]

    def prob(self, theta: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(np.atleast_2d(theta) @ self.alpha.T - self.beta)))

    def sample(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (rng.random((len(theta), len(self.beta))) < self.prob(theta)).astype(float)

    def true_accuracy(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        p, tasks = self.prob(theta), np.asarray(self.tasks)
        return {t: p[:, tasks == t].mean(axis=1) for t in dict.fromkeys(self.tasks)}

    def responses(self, theta: np.ndarray, rng: np.random.Generator, prefix: str) -> ResponseMatrix:
        names = tuple(f"{prefix}{k}" for k in range(len(theta)))
        return ResponseMatrix(names, self.items, self.tasks, self.sample(theta, rng))

    def bank(self) -> ItemBank:
        """The true parameters as an item bank: what an oracle estimator is given."""
        return ItemBank("2pl", self.items, self.tasks, self.alpha, self.beta, source="truth")


def make_world(
    n_tasks: int = 4,
    items_per_task: int = 500,
    dims: int = 2,
    regime: str = "realistic",
    seed: int = 0,
) -> World:
    disc, beta_sd = REGIMES[regime]
    rng = np.random.default_rng(seed)
    alpha, beta, tasks, items = [], [], [], []
    for t in range(n_tasks):
        # Each task's main direction: spread over the positive orthant.
        centre = rng.dirichlet(np.full(dims, 1.0)) + 0.15
        for i in range(items_per_task):
            direction = centre * rng.lognormal(0, 0.3, dims)
            direction /= np.linalg.norm(direction)
            alpha.append(direction * disc * rng.lognormal(0, 0.25))
            beta.append(rng.normal(0, beta_sd))
            tasks.append(f"task{t}")
            items.append(f"task{t}/q{i}")
    return World(np.array(alpha), np.array(beta), tuple(tasks), tuple(items))


def merges(
    endpoints: np.ndarray, n: int, rng: np.random.Generator, sizes: tuple[int, ...] = (2, 3, 4)
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` merged abilities θ = Σ λ_j θ_j, each over 2–4 of the endpoints, λ ~ Dirichlet(1).

    Returns (θ (n × D), λ (n × J) with zeros for endpoints not in the merge).
    """
    J = len(endpoints)
    lam = np.zeros((n, J))
    for m in range(n):
        k = int(rng.choice([s for s in sizes if s <= J]))
        chosen = rng.choice(J, size=k, replace=False)
        lam[m, chosen] = rng.dirichlet(np.ones(k))
    return lam @ endpoints, lam
