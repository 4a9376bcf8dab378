"""Weights in and out: Hugging Face folders, (sharded) safetensors, dtypes.

Weights are only ever read through safetensors: no pickle is unpickled from a model folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open

from merge3.errors import ModelError

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ModelError(f"unknown dtype {name!r} (known: {', '.join(DTYPES)})") from None


def check_model_dir(path: str | Path) -> Path:
    """A model folder must exist and hold a config.json; say which one is wrong if not."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: model folder not found")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a Hugging Face model folder (no config.json)")
    return path


def safetensors_files(path: str | Path) -> list[Path]:
    """The safetensors files of a model folder: one file, or the shards its index lists."""
    path = check_model_dir(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ModelError(f"{index}: malformed shard index ({exc})") from None
        files = [path / s for s in shards]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelError(f"{path}: shard {missing[0]} listed in the index is missing")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelError(
            f"{path}: no .safetensors weights (merge3 reads only safetensors; convert "
            "pytorch_model.bin with `save_pretrained(..., safe_serialization=True)`)"
        )
    return files


class TensorReader:
    """Random access to every tensor of a model folder without loading the whole model."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stack = ExitStack()
        self._where: dict[str, object] = {}
        for file in safetensors_files(path):
            try:
                handle = self._stack.enter_context(safe_open(str(file), framework="pt"))
            except Exception as exc:  # safetensors raises its own error types
                raise ModelError(f"{file}: unreadable safetensors file ({exc})") from None
            for key in handle.keys():
                self._where[key] = handle

    def keys(self) -> Iterator[str]:
        return iter(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._where[key].get_tensor(key)  # type: ignore[attr-defined]
        except KeyError:
            raise ModelError(f"{self.path}: tensor {key!r} not found") from None

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_causal_lm(
    path: str | Path, dtype: torch.dtype, device: str = "cpu", trust_remote_code: bool = False
):
    """Load a causal LM from a local folder in ``dtype`` on ``device``: safetensors weights
    only, and no Python code from the folder unless ``trust_remote_code`` (config:
    ``models.trust_remote_code``) turns it on."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # merge3 draws its own progress; one bar per load is noise
    path = check_model_dir(path)
    safetensors_files(path)  # fail early and clearly if the weights are not safetensors
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
            use_safetensors=True,  # never fall back to a pickled pytorch_model.bin
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load as a causal LM ({exc})") from None
    return model.to(device).eval()


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = check_model_dir(path)
    try:
        tok = AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load its tokenizer ({exc})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
