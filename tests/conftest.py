"""Shared fixtures. Nothing here reaches the network; models are built locally and cached."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "experiments" / "configs" / "tiny.yaml"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The tiny setting (base + 3 fine-tuned endpoints + items), built once into the cache."""
    from merge3.tiny import build_tiny

    return build_tiny()
