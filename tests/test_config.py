"""Config validation: every malformed config fails with one message naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from merge3.config import dump_config, load_config, parse_config
from merge3.errors import ConfigError

VALID = {
    "models": {"base": "models/base", "endpoints": {"a": "models/a", "b": "models/b"}},
    "benchmark": {
        "tasks": [{"name": "t1", "search": "t1.jsonl"}, {"name": "t2", "search": "t2.jsonl"}]
    },
    "search": {"algorithm": "nsga2", "population": 4, "generations": 2},
}


def _with(path: str, value):
    """A copy of VALID with the dotted ``path`` set to ``value`` (or deleted if value is ...)."""
    cfg = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = cfg
    for key in parents:
        node = node.setdefault(key, {}) if not key.isdigit() else node[int(key)]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return cfg


MALFORMED = [
    (_with("models.base", ...), "models.base", "required"),
    (_with("models.endpoints", {}), "models.endpoints", "at least 1"),
    (_with("models.dtype", "float8"), "models.dtype", "float32"),
    (_with("models.extra_key", 1), "models.extra_key", "unknown key"),
    (_with("search.population", 1), "search.population", "greater than or equal to 2"),
    (_with("search.generations", "many"), "search.generations", "integer"),
    (_with("search.algorithm", "pso"), "search.algorithm", "'nsga2' or 'nsga3'"),
    (
        _with("search", {"algorithm": "nsga3", "objectives": "mean"}),
        "search.algorithm",
        "two or more objectives",
    ),
    (_with("merge.step", 0), "merge.step", "greater than 0"),
    (_with("search.populaton", 8), "search.populaton", "unknown key"),
    (_with("anchors.n_per_task", 0), "anchors.n_per_task", "greater than or equal to 1"),
    (_with("estimator.name", "oracle"), "estimator.name", "mean"),
    (_with("merge.operator", "tie"), "merge.operator", "unknown operator 'tie'"),
    (
        _with("merge.bounds", {"weight": [1.0, 0.0]}),
        "merge.bounds",
        "lower 1.0 must be below upper 0.0",
    ),
    (
        _with("merge.bounds", {"density": [0.1, 1.0]}),
        "merge.bounds.density",
        "no parameter 'density'",
    ),
    (_with("merge.fixed", {"alpha": 1.0}), "merge.fixed.alpha", "no parameter 'alpha'"),
    (_with("benchmark.tasks", []), "benchmark.tasks", "at least 1"),
    (
        _with("benchmark.tasks", [{"name": "t", "search": "a"}, {"name": "t", "search": "b"}]),
        "benchmark.tasks",
        "'t' appears twice",
    ),
    (_with("benchmark.tasks.0.fields", {"prompt": "q"}), "benchmark.tasks.0.fields", "'prompt'"),
    (_with("benchmark.tasks.0.search", ...), "benchmark.tasks.0", "give either `search`"),
    (_with("benchmark.tasks.0.spec", "mmlu"), "benchmark.tasks.0", "or `spec`"),
    (_with("estimator.lam", 1.5), "estimator.lam", "less than or equal to 1"),
    (_with("anchors.method", "kmeans"), "anchors.method", "'irt-kmeans'"),
    (
        _with("search", {"algorithm": "ga", "objectives": "per_task"}),
        "search.objectives",
        "single-objective",
    ),
    (_with("evaluation.batch_size", -3), "evaluation.batch_size", "greater than or equal to 1"),
    (_with("prepare", "huge"), "prepare", "'tiny'"),
]


@pytest.mark.parametrize(("data", "key", "reason"), MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_config_names_the_key(data, key, reason):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "run.yaml")
    message = str(err.value)
    assert message.startswith("run.yaml: "), message
    assert key in message, message
    assert reason in message, message
    assert "\n" not in message


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config(["models"], "run.yaml")


def test_file_errors_name_the_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  base: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d"):
        load_config(bad)
    env = tmp_path / "env.yaml"
    env.write_text(yaml.safe_dump(_with("models.base", "${MERGE3_SURELY_UNSET_VAR}/base")))
    with pytest.raises(ConfigError, match="MERGE3_SURELY_UNSET_VAR"):
        load_config(env)


def test_resolved_config_round_trips_with_every_default(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(VALID))
    cfg = load_config(path)
    # relative paths are anchored at the config's folder, so the run dir's copy is self-contained
    assert cfg.models.base == str(tmp_path / "models" / "base")
    assert cfg.benchmark.tasks[0].search == str(tmp_path / "t1.jsonl")
    text = dump_config(cfg)
    dumped = yaml.safe_load(text)
    assert dumped["anchors"] == {"n_per_task": 20, "method": "random", "seed": 0}
    assert dumped["evaluation"]["batch_size"] == 32
    again = tmp_path / "again.yaml"
    again.write_text(text)
    assert load_config(again) == cfg


def test_objectives_follow_the_algorithm():
    cfg = parse_config(VALID)
    assert cfg.objective_names == ["t1", "t2"]
    assert parse_config(_with("search.algorithm", "ga")).objective_names == ["mean"]
    both = parse_config(_with("search.objectives", "mean"))
    assert both.search.algorithm == "nsga2" and both.objective_names == ["mean"]


def test_tiny_config_is_valid(tmp_path: Path, monkeypatch):
    from conftest import TINY_CONFIG

    monkeypatch.setenv("MERGE3_CACHE", str(tmp_path))
    cfg = load_config(TINY_CONFIG)
    assert cfg.models.base == str(tmp_path / "tiny-v1" / "base")
    assert list(cfg.models.endpoints) == ["add", "next", "color"]
