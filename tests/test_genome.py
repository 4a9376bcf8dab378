"""Genome ↔ recipe is derived from the operator's parameters and the config's bounds."""

from __future__ import annotations

import numpy as np
import pytest

from merge3.evolve.genome import GenomeSpace
from merge3.merging import get_operator


def test_genes_come_from_the_operator():
    space = GenomeSpace(
        get_operator("task_arithmetic"), ["a", "b", "c"], bounds={"lambda": (0.5, 1.5)}
    )
    assert space.names == ["weight[a]", "weight[b]", "weight[c]", "lambda"]
    np.testing.assert_array_equal(space.lower, [0, 0, 0, 0.5])
    np.testing.assert_array_equal(space.upper, [1, 1, 1, 1.5])
    recipe = space.decode([0.1, 0.2, 0.3, 0.9])
    assert recipe == {
        "operator": "task_arithmetic",
        "endpoints": ["a", "b", "c"],
        "params": {"weight": [0.1, 0.2, 0.3], "lambda": 0.9, "normalize": False},
    }


def test_fixed_parameters_leave_the_genome():
    space = GenomeSpace(
        get_operator("task_arithmetic"), ["a", "b"], fixed={"lambda": 1.0, "normalize": True}
    )
    assert space.names == ["weight[a]", "weight[b]"]
    assert space.decode([0.4, 0.6])["params"] == {
        "weight": [0.4, 0.6],
        "lambda": 1.0,
        "normalize": True,
    }
    only_lambda = GenomeSpace(get_operator("task_arithmetic"), ["a", "b"], fixed={"weight": 0.5})
    assert only_lambda.names == ["lambda"]
    resolved = get_operator("task_arithmetic").resolve(only_lambda.decode([1.2])["params"], 2)
    assert resolved["weight"].tolist() == [0.5, 0.5]


def test_wrong_genome_length_is_refused():
    space = GenomeSpace(get_operator("linear"), ["a", "b"])
    with pytest.raises(ValueError, match="3 genes, the space 2"):
        space.decode([0.1, 0.2, 0.3])


def test_step_snaps_genes_to_the_grid_inside_the_bounds():
    space = GenomeSpace(
        get_operator("task_arithmetic"), ["a", "b"], bounds={"lambda": (0.5, 1.5)}, step=0.1
    )
    assert space.snap([0.34, 0.96, 1.449]) == [0.3, 1.0, 1.4]
    assert space.snap([0.0, 1.0, 0.5]) == [0.0, 1.0, 0.5]
    recipe = space.decode([0.349999, 0.651, 1.04])
    assert recipe["params"]["weight"] == [0.3, 0.7] and recipe["params"]["lambda"] == 1.0
    coarse = GenomeSpace(get_operator("task_arithmetic"), ["a"], fixed={"lambda": 1.0}, step=0.3)
    assert coarse.snap([0.99]) == [0.9]  # 1.2 would leave the bounds [0, 1]
