"""pymoo algorithms by name, with merge3's defaults."""

from __future__ import annotations

from pymoo.core.algorithm import Algorithm

from merge3.errors import ConfigError


def make_algorithm(name: str, population: int, seed: int) -> Algorithm:
    """``ga`` (one objective) or ``nsga2`` (several); duplicates are never evaluated twice."""
    if name == "ga":
        from pymoo.algorithms.soo.nonconvex.ga import GA

        algorithm: Algorithm = GA(pop_size=population, eliminate_duplicates=True)
    elif name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        algorithm = NSGA2(pop_size=population, eliminate_duplicates=True)
    else:
        raise ConfigError(f"search.algorithm: unknown algorithm {name!r} (known: ga, nsga2)")
    algorithm.seed = seed
    return algorithm
