"""Generative exact match: batched greedy decoding with stop sequences and a token cap.

Prompts are tokenised once at construction, sorted by length and left-padded in batches;
decoding is transformers' ``generate`` (greedy, KV cache, ``stop_strings``): a batch stops when
every row has met a stop sequence or the cap. As in lm-eval, the decoded continuation is cut at
the first stop sequence and the answer read off it (:mod:`merge3.evaluate.answers`).
Items with no reference answer or a prompt that leaves no room for the cap are excluded (NaN).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from merge3.data.items import Excluded, Item
from merge3.data.tasks import Generation
from merge3.evaluate.answers import cut_at_stop, is_correct

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
    ) -> None:
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
        order = sorted(encoded, key=lambda i: -len(encoded[i]))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_id = pad
        self._batches = []
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for b, i in enumerate(idx):
                ids[b, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[b, width - len(encoded[i]) :] = 1
            self._batches.append((idx, ids.to(device), mask.to(device)))
        self.last_texts: list[str | None] = [None] * len(self.items)

    @torch.inference_mode()
    def generate(self, model) -> list[str | None]:
        """The continuation of every item, cut at the first stop sequence (None: excluded)."""
        texts: list[str | None] = [None] * len(self.items)
        for idx, ids, mask in self._batches:
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
