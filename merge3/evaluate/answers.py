"""Reading an answer off generated text, and lm-eval's exact-match normalisation.

The extractors are lm-eval's GSM8K filters: ``gsm8k`` is its "strict-match" (the first
``#### N``), ``last_number`` its "flexible-extract" (the last number-like run). The comparison
applies lm-eval's ``exact_match`` settings for GSM8K (case-insensitive; commas, dollar signs,
everything up to ``#### `` and a trailing full stop ignored) to both prediction and reference.
"""

from __future__ import annotations

import re

INVALID = "[invalid]"
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = [re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$")]


def extract(text: str, mode: str) -> str:
    """The answer in ``text`` (``INVALID`` when there is none)."""
    if mode == "none":
        return text
    if mode == "gsm8k":
        match = _STRICT.search(text)
        return match.group(1) if match else INVALID
    if mode == "last_number":
        matches = _FLEXIBLE.findall(text)
        if not matches:
            return INVALID
        return next(g for g in matches[-1] if g)
    raise ValueError(f"unknown answer extractor {mode!r}")


def normalize(text: str) -> str:
    for pattern in _IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def cut_at_stop(text: str, until: tuple[str, ...]) -> str:
    """The text before the first stop sequence (lm-eval splits on each in turn)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def is_correct(generated: str, reference: str, mode: str) -> bool:
    return normalize(extract(generated, mode)) == normalize(str(reference))
