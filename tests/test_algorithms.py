"""Every algorithm resumes exactly from a checkpoint, and grid genomes are evaluated once."""

from __future__ import annotations

import dill
import numpy as np
import pytest
import yaml
from conftest import TINY_CONFIG
from pymoo.core.evaluator import Evaluator
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem

from merge3.errors import ConfigError
from merge3.evolve import fitness as fitness_module
from merge3.evolve import start_search
from merge3.evolve.algorithms import ALGORITHMS, das_dennis_partitions, make_algorithm
from merge3.evolve.problem import MergeProblem
from merge3.runs import load_run


def _objectives(X: np.ndarray, n_obj: int) -> np.ndarray:
    return np.stack([((X - 0.3 * (k + 1)) ** 2).sum(1) for k in range(n_obj)], 1)


def _asks(name: str, generations: int, checkpoint_at: int | None = None) -> list[np.ndarray]:
    n_obj = 2 if name.startswith("nsga") else 1
    problem = MergeProblem(np.zeros(4), np.ones(4), n_obj)
    algorithm = make_algorithm(name, 8, 3, n_obj)
    algorithm.setup(problem, termination=NoTermination(), seed=3)
    asked = []
    for g in range(generations):
        if g == checkpoint_at:  # what a checkpoint + resume does to the optimiser
            algorithm = dill.loads(dill.dumps(algorithm))
        np.random.seed(1000 + g)  # other code touching the global RNG must not matter
        population = algorithm.ask()
        X = population.get("X")
        asked.append(X.copy())
        Evaluator().eval(StaticProblem(problem, F=_objectives(X, n_obj)), population)
        algorithm.tell(infills=population)
    return asked


@pytest.mark.parametrize("name", ALGORITHMS)
def test_checkpointed_algorithm_asks_the_same_genomes(name):
    whole = _asks(name, 6)
    resumed = _asks(name, 6, checkpoint_at=3)
    assert all(np.array_equal(a, b) for a, b in zip(whole, resumed, strict=True))
    assert all(len(a) == 8 for a in whole)
    assert all(((a >= 0) & (a <= 1)).all() for a in whole)
    # and it optimises: the last generation beats the random first one
    n_obj = 2 if name.startswith("nsga") else 1
    assert _objectives(whole[-1], n_obj).min() < _objectives(whole[0], n_obj).min()


def test_nsga3_reference_directions_fit_the_population():
    assert das_dennis_partitions(2, 8) == 7  # p + 1 = 8 directions ≤ 8
    assert das_dennis_partitions(3, 16) == 4  # 15 directions ≤ 16
    with pytest.raises(ConfigError, match="two objectives"):
        make_algorithm("nsga3", 8, 0, 1)


def test_grid_genomes_are_evaluated_once_per_recipe(tiny_dir, tmp_path, monkeypatch):
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["merge"]["step"] = 0.5  # 3 values per weight, 3 for lambda: repeats are certain
    data["search"].update(algorithm="cmaes", population=8, generations=3)
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    calls = {"n": 0}
    real_call = fitness_module.Fitness.__call__

    def counting(self, genome):
        calls["n"] += 1
        return real_call(self, genome)

    monkeypatch.setattr(fitness_module.Fitness, "__call__", counting)
    rows = load_run(start_search(config, tmp_path / "run").path).rows
    recipes = {}
    for row in rows:
        key = repr(row.recipe)
        assert recipes.setdefault(key, row.objectives) == row.objectives
        assert all(round(w / 0.5, 9).is_integer() for w in row.recipe["params"]["weight"])
    assert len(rows) == 24
    assert calls["n"] == len(recipes) < len(rows)
    assert sum(1 for r in rows if r.timings.get("reused")) == len(rows) - len(recipes)


@pytest.mark.parametrize("operator", ["ties", "dare_ties", "tsv", "linear"])
def test_every_operator_searches_end_to_end(tiny_dir, tmp_path, operator):
    """The genome comes from the operator's parameters: densities for TIES/DARE, alpha for TSV."""
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["merge"] = {"operator": operator}
    data["search"].update(algorithm="nsga2", generations=1, population=4)
    data["final"] = {"export_best": False, "top_k": 1}
    config = tmp_path / "op.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    run = load_run(start_search(config, tmp_path / "run").path)
    expected = {
        "ties": ["density[add]", "lambda"],
        "dare_ties": ["density[color]", "lambda"],
        "tsv": ["weight[next]", "alpha"],
        "linear": ["weight[add]"],
    }[operator]
    assert set(expected) <= set(run.gene_names())
    assert run.n_candidates == 4 and len(run.test_accuracy) == 1
    for row in run.rows:
        assert row.recipe["operator"] == operator
        assert all(0.0 <= v <= 1.0 for v in row.objectives.values()), row
