"""Synthetic endpoints: a base plus seeded random deltas, written as HF folders.

For tests (a tiny random Llama, built in well under a second) and benchmarks (SmolLM2 plus
synthetic deltas: the values do not change a merge's cost). Low-rank deltas mimic fine-tunes,
whose task vectors are dominated by a few singular directions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from merge3.models.io import TensorReader, check_model_dir


def tiny_llama(
    folder: str | Path, seed: int = 0, vocab_size: int = 96, tie: bool = False, layers: int = 2
) -> Path:
    """Save a randomly initialised tiny Llama (hidden 32) to ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return Path(folder)


def perturbed_copy(
    base_dir: str | Path,
    out_dir: str | Path,
    seed: int,
    scale: float = 0.02,
    rank: int | None = 4,
    vocab_rows: int | None = None,
) -> Path:
    """Write ``base + δ`` to ``out_dir`` (config copied); δ is seeded, low-rank for matrices.

    ``vocab_rows`` changes the number of embedding rows (added tokens), for crop tests.
    """
    base_dir = check_model_dir(base_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    with TensorReader(base_dir) as reader:
        for name in sorted(reader.keys()):
            theta = reader.get(name)
            work = theta.float()
            if work.dim() == 2 and rank is not None:
                m, n = work.shape
                r = min(rank, m, n)
                a = torch.randn(m, r, generator=gen) / r**0.5
                b = torch.randn(r, n, generator=gen)
                delta = a @ b * scale
            else:
                delta = torch.randn(work.shape, generator=gen) * scale
            new = work + delta
            if vocab_rows is not None and name.endswith(("embed_tokens.weight", "lm_head.weight")):
                if vocab_rows > new.shape[0]:
                    extra = torch.randn(vocab_rows - new.shape[0], new.shape[1], generator=gen)
                    new = torch.cat([new, extra * scale])
                else:
                    new = new[:vocab_rows]
            tensors[name] = new.to(theta.dtype).contiguous()
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = (base_dir / "config.json").read_text()
    if vocab_rows is not None:
        import json

        cfg = json.loads(config)
        cfg["vocab_size"] = vocab_rows
        config = json.dumps(cfg, indent=2)
    (out_dir / "config.json").write_text(config)
    return out_dir
