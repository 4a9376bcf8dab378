"""merge3's operators against mergekit (PyPI) on a tiny random Llama with 3 endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from merge3.merging import get_operator
from merge3.models.endpoints import Endpoints
from merge3.models.io import TensorReader
from merge3.models.synthetic import perturbed_copy, tiny_llama

mergekit = pytest.importorskip("mergekit")  # dev extra: present in CI

WEIGHTS = [0.3, 0.5, 0.9]  # deliberately not summing to 1


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("parity")
    base = tiny_llama(root / "base", seed=0)
    eps = [perturbed_copy(base, root / f"ep{i}", seed=10 + i, scale=0.05) for i in range(3)]
    return base, eps


@pytest.fixture(scope="module")
def endpoints(folders) -> Endpoints:
    base, eps = folders
    return Endpoints.load(base, {e.name: e for e in eps})


def run_mergekit(folders, out: Path, method: str, per_model: list[dict], params: dict) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    base, eps = folders
    models = [{"model": str(e), "parameters": p} for e, p in zip(eps, per_model, strict=True)]
    if method != "linear":
        models = [{"model": str(base)}, *models]
    cfg = {"merge_method": method, "dtype": "float32", "models": models, "parameters": params}
    if method != "linear":  # mergekit's linear would weigh a base_model as one more input
        cfg["base_model"] = str(base)
    options = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False, random_seed=0)
    run_merge(MergeConfiguration.model_validate(cfg), str(out), options)
    with TensorReader(out) as reader:
        return {k: reader.get(k) for k in reader.keys()}


def assert_same(endpoints: Endpoints, reference: dict, atol: float = 2e-6) -> None:
    for name, p in endpoints.params.items():
        torch.testing.assert_close(p.detach(), reference[name], atol=atol, rtol=1e-5, msg=name)


def merge3_apply(endpoints: Endpoints, method: str, values: dict) -> None:
    op = get_operator(method)
    endpoints.apply(op, op.resolve(values, endpoints.n_models))


@pytest.mark.parametrize("normalize", [False, True])
def test_task_arithmetic(folders, endpoints, tmp_path, normalize):
    ref = run_mergekit(
        folders,
        tmp_path / "out",
        "task_arithmetic",
        [{"weight": w} for w in WEIGHTS],
        {"normalize": normalize, "lambda": 0.8},
    )
    merge3_apply(
        endpoints, "task_arithmetic", {"weight": WEIGHTS, "normalize": normalize, "lambda": 0.8}
    )
    assert_same(endpoints, ref)


def test_linear(folders, endpoints, tmp_path):
    ref = run_mergekit(folders, tmp_path / "out", "linear", [{"weight": w} for w in WEIGHTS], {})
    merge3_apply(endpoints, "linear", {"weight": WEIGHTS})
    assert_same(endpoints, ref)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("density", [0.2, 0.5, 0.9])
def test_ties(folders, endpoints, tmp_path, normalize, density):
    densities = [density, min(1.0, density + 0.05), max(0.05, density - 0.1)]
    per_model = [{"weight": w, "density": d} for w, d in zip(WEIGHTS, densities, strict=True)]
    ref = run_mergekit(folders, tmp_path / "out", "ties", per_model, {"normalize": normalize})
    merge3_apply(
        endpoints, "ties", {"weight": WEIGHTS, "density": densities, "normalize": normalize}
    )
    assert_same(endpoints, ref)


def test_ties_rescale_and_lambda(folders, endpoints, tmp_path):
    per_model = [{"weight": w, "density": 0.4} for w in WEIGHTS]
    params = {"rescale": True, "lambda": 1.3, "normalize": True}
    ref = run_mergekit(folders, tmp_path / "out", "ties", per_model, params)
    merge3_apply(endpoints, "ties", {"weight": WEIGHTS, "density": 0.4, **params})
    assert_same(endpoints, ref, atol=1e-5)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_at_density_one_is_deterministic_and_matches(folders, endpoints, tmp_path, method):
    per_model = [{"weight": w, "density": 1.0} for w in WEIGHTS]
    ref = run_mergekit(folders, tmp_path / "out", method, per_model, {"normalize": True})
    merge3_apply(endpoints, method, {"weight": WEIGHTS, "density": 1.0, "normalize": True})
    assert_same(endpoints, ref)


def _deltas(state: dict, endpoints: Endpoints) -> torch.Tensor:
    return torch.cat([(state[n] - endpoints.base[n]).reshape(-1) for n in endpoints.params])


@pytest.mark.parametrize("rescale", ["l1", "inverse_density"])
def test_dare_linear_statistics_match_mergekit(folders, endpoints, tmp_path, rescale):
    """One task at weight 1: the kept fraction and the size of the delta match mergekit's."""
    density = 0.3
    per_model = [{"weight": w, "density": density} for w in (1.0, 0.0, 0.0)]
    ref = run_mergekit(
        folders, tmp_path / "out", "dare_linear", per_model, {"rescale": rescale == "l1"}
    )
    merge3_apply(
        endpoints,
        "dare_linear",
        {"weight": [1.0, 0.0, 0.0], "density": density, "rescale": rescale},
    )
    ours = _deltas({n: p.detach() for n, p in endpoints.params.items()}, endpoints)
    theirs = _deltas(ref, endpoints)
    tau = torch.cat([endpoints.task_vectors[n][0].reshape(-1) for n in endpoints.params])
    kept_ours = (ours != 0).double().mean().item()
    assert abs(kept_ours - density) < 0.01
    if rescale == "l1":  # both preserve each tensor's L1 norm, hence the whole model's
        assert abs(theirs.abs().sum() / tau.abs().sum() - 1) < 1e-4
        assert abs(ours.abs().sum() / tau.abs().sum() - 1) < 1e-4
        assert abs((theirs != 0).double().mean().item() - density) < 0.01
    else:  # mergekit without rescale keeps entries unscaled; ours scales them by 1/density
        kept = ours != 0
        torch.testing.assert_close(ours[kept], tau[kept] / density, rtol=1e-3, atol=1e-7)
        assert ((theirs == 0) | torch.isclose(theirs, tau)).all()
