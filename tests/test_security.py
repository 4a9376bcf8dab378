"""What merge3 reads: weights only through safetensors, no remote code unless the config says so,
no pickle unless it is a checksummed checkpoint of the run's own folder."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG

from merge3.config import load_config
from merge3.errors import ModelError
from merge3.models import io


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _with_malicious_bin(src: Path, dst: Path, marker: Path, keep_safetensors: bool) -> Path:
    shutil.copytree(src, dst)
    if not keep_safetensors:
        (dst / "model.safetensors").unlink()
    with open(dst / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"lm_head.weight": _Payload(marker)}, fh, protocol=2)
    return dst


def test_a_pickled_checkpoint_in_a_model_folder_is_never_unpickled(tiny_dir, tmp_path):
    marker = tmp_path / "PWNED"
    only_bin = _with_malicious_bin(tiny_dir / "base", tmp_path / "only", marker, False)
    with pytest.raises(ModelError, match="merge3 reads only safetensors"):
        io.load_causal_lm(only_bin, torch.float32)
    with pytest.raises(ModelError, match="merge3 reads only safetensors"):
        io.TensorReader(only_bin)
    # beside safetensors weights, the pickle is ignored: the model loads from safetensors
    both = _with_malicious_bin(tiny_dir / "base", tmp_path / "both", marker, True)
    model = io.load_causal_lm(both, torch.float32)
    reference = io.load_causal_lm(tiny_dir / "base", torch.float32)
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)
    assert not marker.exists()


def test_trust_remote_code_is_off_unless_the_config_turns_it_on(tiny_dir, tmp_path, monkeypatch):
    import transformers

    seen: list[tuple[str, object]] = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, _name=cls.__name__, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code", "unset")))
            if _name == "AutoModelForCausalLM":
                assert kwargs.get("use_safetensors") is True
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))

    from merge3.evolve.fitness import Merger

    data = yaml.safe_load(TINY_CONFIG.read_text())
    (tmp_path / "off.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(tmp_path / "off.yaml")
    assert cfg.models.trust_remote_code is False
    Merger(cfg)
    assert sorted(seen) == [("AutoModelForCausalLM", False), ("AutoTokenizer", False)]

    seen.clear()
    data["models"]["trust_remote_code"] = True
    (tmp_path / "on.yaml").write_text(yaml.safe_dump(data))
    Merger(load_config(tmp_path / "on.yaml"))
    assert sorted(seen) == [("AutoModelForCausalLM", True), ("AutoTokenizer", True)]


def test_no_unsafe_deserialisation_in_the_package():
    """Source audit: no torch.load without weights_only=True, no pickle/dill loads outside the
    checked checkpoint reader, no hard-coded trust_remote_code=True."""
    problems = []
    for path in sorted((REPO / "merge3").rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(REPO)
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                problems.append(f"{rel}: {match.group(0)}")
        for match in re.finditer(r"\b(pickle|dill|cloudpickle|joblib)\.loads?\(", text):
            if str(rel) != "merge3/runs.py":
                problems.append(f"{rel}: {match.group(0)}")
        if re.search(r"trust_remote_code\s*=\s*True", text):
            problems.append(f"{rel}: trust_remote_code=True")
        if re.search(r"allow_pickle\s*=\s*True|read_pickle\(", text):
            problems.append(f"{rel}: pickle through numpy/pandas")
    assert problems == []
    runs = (REPO / "merge3" / "runs.py").read_text()
    assert runs.count("dill.loads(") == 1  # the one in _read_checkpoint, after the checks
