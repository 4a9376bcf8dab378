"""Models in and out (HF folders, safetensors) and the resident endpoints of a search."""

from merge3.models.endpoints import Endpoints
from merge3.models.io import TensorReader, load_causal_lm, load_tokenizer, parse_dtype

__all__ = ["Endpoints", "TensorReader", "load_causal_lm", "load_tokenizer", "parse_dtype"]
