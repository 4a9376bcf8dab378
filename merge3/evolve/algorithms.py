"""pymoo algorithms by name, with merge3's defaults.

| name   | objectives | default settings                                                 |
|--------|------------|------------------------------------------------------------------|
| ga     | one        | pymoo GA: tournament selection, SBX crossover, polynomial mutation |
| de     | one        | pymoo DE, variant DE/rand/1/bin, F = 0.5, CR = 0.9               |
| cmaes  | one        | CMA-ES (the ``cma`` package), σ₀ = 0.25 of each gene's range     |
| nsga2  | several    | pymoo NSGA-II                                                    |
| nsga3  | several    | pymoo NSGA-III, Das-Dennis reference directions, as many as the  |
|        |            | population allows                                                |

Every algorithm eliminates duplicate genomes where pymoo supports it, so no candidate is
evaluated twice in one generation.
"""

from __future__ import annotations

from math import comb

from pymoo.core.algorithm import Algorithm

from merge3.errors import ConfigError

SINGLE_OBJECTIVE = ("ga", "de", "cmaes")
MULTI_OBJECTIVE = ("nsga2", "nsga3")
ALGORITHMS = SINGLE_OBJECTIVE + MULTI_OBJECTIVE


def das_dennis_partitions(n_obj: int, population: int) -> int:
    """The most partitions whose Das-Dennis directions still fit in the population."""
    p = 1
    while comb(p + 1 + n_obj - 1, n_obj - 1) <= population:
        p += 1
    return p


def make_algorithm(name: str, population: int, seed: int, n_obj: int = 1) -> Algorithm:
    """A configured pymoo algorithm; ``setup`` (with the problem and seed) is the caller's."""
    if name == "ga":
        from pymoo.algorithms.soo.nonconvex.ga import GA

        algorithm: Algorithm = GA(pop_size=population, eliminate_duplicates=True)
    elif name == "de":
        from pymoo.algorithms.soo.nonconvex.de import DE

        algorithm = DE(pop_size=population, variant="DE/rand/1/bin", F=0.5, CR=0.9)
    elif name == "cmaes":
        from merge3.evolve.cmaes import CheckpointableCMAES

        algorithm = CheckpointableCMAES(popsize=population)
    elif name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        algorithm = NSGA2(pop_size=population, eliminate_duplicates=True)
    elif name == "nsga3":
        from pymoo.algorithms.moo.nsga3 import NSGA3
        from pymoo.util.ref_dirs import get_reference_directions

        if n_obj < 2:
            raise ConfigError("search.algorithm: 'nsga3' needs at least two objectives")
        ref_dirs = get_reference_directions(
            "das-dennis", n_obj, n_partitions=das_dennis_partitions(n_obj, population)
        )
        algorithm = NSGA3(ref_dirs=ref_dirs, pop_size=population, eliminate_duplicates=True)
    else:
        known = ", ".join(ALGORITHMS)
        raise ConfigError(f"search.algorithm: unknown algorithm {name!r} (known: {known})")
    algorithm.seed = seed
    return algorithm
