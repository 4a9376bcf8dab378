"""Generative exact match: batched greedy decoding with stop sequences and a token cap.

Prompts are tokenised once at construction, sorted by length and left-padded in batches;
decoding is transformers' ``generate`` (greedy, KV cache, ``stop_strings``): a batch stops when
every row has met a stop sequence or the cap. As in lm-eval, the decoded continuation is cut at
the first stop sequence and the answer read off it (:mod:`merge3.evaluate.answers`).
Items with no reference answer or a prompt that leaves no room for the cap are excluded (NaN).

Few-shot prompts (GSM8K, MGSM): items with the same ``context`` share the longest common token
prefix of their whole prompts (tokenised whole, so the tokens are exactly the no-reuse ones).
Per call, that prefix runs once; its key/value cache is expanded over each batch of the group,
and ``generate`` runs only the items' own tokens, left-padded *between* prefix and item
(``[prefix | pad | item]``: the attention mask hides the padding and the positions, counted off
the mask, are the ones the unshared prompt has), then the generated ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from merge3.data.items import Excluded, Item
from merge3.data.tasks import Generation
from merge3.evaluate.answers import cut_at_stop, is_correct
from merge3.evaluate.multiple_choice import (
    _cache_kwarg,
    _common_prefix,
    _expanded_cache,
    _prefix_cache,
)

log = logging.getLogger(__name__)


class GenerativeEvaluator:
    """Per-item exact match of greedy generations."""

    def __init__(
        self,
        items: Sequence[Item],
        tokenizer,
        generation: Generation | None = None,
        batch_size: int = 8,
        device: str = "cpu",
        max_length: int | None = None,
        add_special_tokens: bool = False,
        reuse_prefix: bool | None = None,
        min_prefix: int = 32,
    ) -> None:
        """``reuse_prefix``: None (auto: share contexts of ≥ ``min_prefix`` tokens), True, False."""
        self.items = list(items)
        self.tokenizer = tokenizer
        self.generation = generation or Generation()
        self.device = device
        eos = (
            tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else ""
        )
        # lm-eval also stops at the decoded EOS token
        self.until = tuple(dict.fromkeys([*self.generation.until, *([eos] if eos else [])]))
        if max_length is None and getattr(tokenizer, "model_max_length", 0) < 1_000_000:
            max_length = tokenizer.model_max_length
        self.excluded: list[Excluded] = []
        self._valid = np.ones(len(self.items), bool)
        encoded = {}
        for i, item in enumerate(self.items):
            ids = tokenizer(item.prompt, add_special_tokens=add_special_tokens)["input_ids"]
            reason = None
            if item.answer is None or not str(item.answer).strip():
                reason = "no reference answer"
            elif max_length and len(ids) + self.generation.max_new_tokens > max_length:
                reason = f"prompt + {self.generation.max_new_tokens} new tokens > {max_length}"
            if reason:
                self._valid[i] = False
                self.excluded.append(Excluded(item.id, item.task, reason))
                log.warning("item %s of %s excluded: %s", item.id, item.task, reason)
            else:
                encoded[i] = ids
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._prefixes: list[list[int]] = []
        group = dict.fromkeys(encoded, -1)
        if reuse_prefix is not False:
            group = self._share_prefixes(encoded, min_prefix if reuse_prefix is None else 1)
        # each group's items by decreasing length of their own part, cut into batches
        n_own = {i: len(ids) - len(self._prefix(group[i])) for i, ids in encoded.items()}
        order = sorted(encoded, key=lambda i: (group[i], -n_own[i]))
        self._batches: list[tuple[list[int], torch.Tensor, torch.Tensor, int]] = []
        start = 0
        while start < len(order):
            g = group[order[start]]
            idx = [i for i in order[start : start + batch_size] if group[i] == g]
            start += len(idx)
            self._batches.append(self._collate(idx, encoded, g, n_own))
        self.last_texts: list[str | None] = [None] * len(self.items)

    def _prefix(self, group: int) -> list[int]:
        return self._prefixes[group] if group >= 0 else []

    def _share_prefixes(self, encoded: dict[int, list[int]], min_prefix: int) -> dict[int, int]:
        """Item -> index of its shared prefix (-1: none). Items with the same non-empty context
        share their prompts' longest common token prefix, leaving each ≥ 1 token of its own
        (``generate`` needs an uncached token to start from)."""
        by_context: dict[str, list[int]] = {}
        for i in encoded:
            if self.items[i].context:
                by_context.setdefault(self.items[i].context, []).append(i)
        group = dict.fromkeys(encoded, -1)
        for members in by_context.values():
            if len(members) < 2:
                continue
            first = encoded[members[0]]
            n = min(len(encoded[i]) for i in members) - 1
            for i in members[1:]:
                n = min(n, _common_prefix(first, encoded[i]))
            if n < min_prefix:
                continue
            self._prefixes.append(first[:n])
            for i in members:
                group[i] = len(self._prefixes) - 1
        return group

    def _collate(self, idx: list[int], encoded, group: int, n_own: dict[int, int]):
        """``[prefix | left padding | own tokens]`` rows and their attention mask."""
        n = len(self._prefix(group))
        width = n + max(n_own[i] for i in idx)
        ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for b, i in enumerate(idx):
            ids[b, :n] = torch.tensor(encoded[i][:n], dtype=torch.long)
            mask[b, :n] = 1
            ids[b, width - n_own[i] :] = torch.tensor(encoded[i][n:], dtype=torch.long)
            mask[b, width - n_own[i] :] = 1
        return idx, ids.to(self.device), mask.to(self.device), group

    @torch.inference_mode()
    def generate(self, model) -> list[str | None]:
        """The continuation of every item, cut at the first stop sequence (None: excluded)."""
        texts: list[str | None] = [None] * len(self.items)
        caches: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for idx, ids, mask, group in self._batches:
            kwargs = {}
            if group >= 0:
                if group not in caches:  # batches come group by group: keep one cache
                    caches = {group: _prefix_cache(model, self._prefixes[group], self.device)}
                kwargs[_cache_kwarg(model)] = _expanded_cache(caches[group], len(idx), model.config)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=self.generation.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                stop_strings=[s for s in self.until if s],
                tokenizer=self.tokenizer,
                pad_token_id=self.pad_id,
                **kwargs,
            )
            for b, i in enumerate(idx):
                new = out[b, ids.shape[1] :].tolist()
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                texts[i] = cut_at_stop(text, self.until)
        self.last_texts = texts
        return texts

    def __call__(self, model) -> np.ndarray:
        """1.0 where the extracted answer matches the reference, else 0.0 (NaN: excluded)."""
        correct = np.full(len(self.items), np.nan)
        for i, text in enumerate(self.generate(model)):
            if text is not None:
                item = self.items[i]
                correct[i] = float(is_correct(text, str(item.answer), self.generation.extract))
        return correct
