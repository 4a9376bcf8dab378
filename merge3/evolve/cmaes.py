"""CMA-ES as a pymoo algorithm whose whole state can be checkpointed.

pymoo's own ``CMAES`` drives ``cma.fmin`` through a Python generator, and a generator cannot be
pickled, so a search using it could not be resumed. Here the ``cma`` package's ask-and-tell
object (which pickles) is wrapped instead, with its Gaussian sampler bound to a private
``RandomState`` seeded from the algorithm's seed: the sampler's state is pickled with the
strategy, so a resumed search asks for exactly the genomes an uninterrupted one would, and
NumPy's global RNG is never touched.
"""

from __future__ import annotations

import numpy as np
from pymoo.core.algorithm import Algorithm
from pymoo.core.population import Population
from pymoo.util.display.single import SingleObjectiveOutput


class CheckpointableCMAES(Algorithm):
    """Single-objective CMA-ES in the unit cube, scaled to the problem's bounds."""

    def __init__(self, popsize: int, sigma: float = 0.25, **kwargs) -> None:
        super().__init__(output=SingleObjectiveOutput(), **kwargs)
        self.popsize = popsize
        self.sigma = sigma
        self.es = None
        self._asked: np.ndarray | None = None

    def _setup(self, problem, **kwargs) -> None:
        import cma

        x0 = self.random_state.uniform(0.25, 0.75, problem.n_var)
        sampler = np.random.RandomState(int(self.random_state.integers(1, 2**31 - 1)))
        options = {
            "popsize": self.popsize,
            "bounds": [0.0, 1.0],
            "randn": sampler.randn,
            "seed": np.nan,  # cma must not reseed the global RNG: `randn` is its only source
            "verbose": -9,
        }
        self.es = cma.CMAEvolutionStrategy(x0, self.sigma, options)

    def _ask(self) -> Population:
        self._asked = np.asarray(self.es.ask(), dtype=float)
        xl, xu = self.problem.xl, self.problem.xu
        return Population.new(X=xl + np.clip(self._asked, 0.0, 1.0) * (xu - xl))

    def _initialize_infill(self) -> Population:
        return self._ask()

    def _infill(self) -> Population:
        return self._ask()

    def _tell(self, infills: Population) -> None:
        self.es.tell(list(self._asked), infills.get("F")[:, 0].tolist())
        self.pop = infills

    def _initialize_advance(self, infills=None, **kwargs) -> None:
        self._tell(infills)

    def _advance(self, infills=None, **kwargs) -> None:
        self._tell(infills)
