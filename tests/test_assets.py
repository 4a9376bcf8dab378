"""Asset helpers: data folder resolution and the idempotent SmolLM2 build (cache only)."""

from __future__ import annotations

import pytest

from merge3.assets import SMOLLM2_VERSION, data_dir, mmlu_jsonl, smollm2_dir
from merge3.errors import DataError


def test_data_dir_prefers_explicit_then_env(tmp_path, monkeypatch):
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "mmlu.jsonl").write_text("{}\n")
    assert data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("MERGE3_DATA", str(tmp_path))
    assert data_dir() == tmp_path and mmlu_jsonl() == tmp_path / "mmlu" / "mmlu.jsonl"
    monkeypatch.delenv("MERGE3_DATA")
    assert (data_dir() / "mmlu" / "mmlu.jsonl").is_file()  # ../shared/data
    with pytest.raises(DataError, match="data folder not found"):
        data_dir(tmp_path / "nowhere")
    with pytest.raises(DataError, match="MMLU jsonl not found"):
        mmlu_jsonl(tmp_path / "mmlu")


def test_smollm2_folder_is_built_once_and_reused(tmp_path):
    folder = smollm2_dir()  # built (or found) in the cache; later calls only check DONE
    assert folder.name == SMOLLM2_VERSION and (folder / "DONE").is_file()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    config = (folder / "config.json").read_text()
    assert "quantization_config" not in config
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert smollm2_dir() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.glob(f".{SMOLLM2_VERSION}-*")]  # no leftovers
