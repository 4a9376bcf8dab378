"""Multiple choice by log-likelihood of each choice, with lm-eval-harness's semantics.

For every item the context is the prompt and each continuation is ``target_delimiter + choice``.
As in lm-eval, the pair is tokenised whole and the context's tokens are split off, so merges of
tokens across the boundary are scored exactly as lm-eval scores them. ``acc`` takes the choice
with the highest summed log-probability; ``acc_norm`` divides it by the choice's length in bytes.

All tokenisation and batching happens once, when the evaluator is built; a call on a candidate
model runs only the forward passes (the hot path of a search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from merge3.data.items import Item


@dataclass(frozen=True)
class _Request:
    item: int
    choice: int
    tokens: list[int]
    n_context: int  # tokens of the context; the rest are scored


class MultipleChoiceEvaluator:
    """Per-item correctness of a causal LM on multiple-choice items."""

    def __init__(
        self,
        items: Sequence[Item],
        tokenizer,
        batch_size: int = 32,
        target_delimiter: str = " ",
        normalize: bool = False,
        device: str = "cpu",
    ) -> None:
        self.items = list(items)
        self.normalize = normalize
        self.device = device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        requests = []
        for i, item in enumerate(self.items):
            for c, choice in enumerate(item.choices):
                requests.append(
                    self._encode(tokenizer, i, c, item.question, target_delimiter + choice)
                )
        # Longest first: batches of similar length waste little padding.
        requests.sort(key=lambda r: -len(r.tokens))
        self._batches = [
            self._collate(requests[s : s + batch_size]) for s in range(0, len(requests), batch_size)
        ]
        self._choice_bytes = [
            np.array([len((target_delimiter + c).encode()) for c in item.choices], float)
            for item in self.items
        ]

    @staticmethod
    def _encode(tokenizer, item: int, choice: int, context: str, continuation: str) -> _Request:
        # lm-eval moves trailing spaces of the context onto the continuation.
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        if not ctx:  # nothing to condition on: start from BOS/EOS like lm-eval
            prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0
            whole, ctx = [prefix, *whole], [prefix]
        return _Request(item, choice, whole, len(ctx))

    def _collate(self, requests: list[_Request]) -> dict:
        width = max(len(r.tokens) for r in requests)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        score = torch.zeros((len(requests), width - 1), dtype=torch.bool)
        for row, r in enumerate(requests):
            ids[row, : len(r.tokens)] = torch.tensor(r.tokens)
            mask[row, : len(r.tokens)] = 1
            # logits at position p predict token p + 1: the continuation's tokens
            score[row, r.n_context - 1 : len(r.tokens) - 1] = True
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "score": score.to(self.device),
            "targets": ids[:, 1:].to(self.device),
            "index": [(r.item, r.choice) for r in requests],
        }

    @torch.inference_mode()
    def loglikelihoods(self, model) -> list[np.ndarray]:
        """Summed log-probability of every choice of every item."""
        out = [np.zeros(len(item.choices)) for item in self.items]
        for batch in self._batches:
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_logp = logp.gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)
            sums = (token_logp * batch["score"]).sum(-1).cpu().numpy()
            for (i, c), value in zip(batch["index"], sums, strict=True):
                out[i][c] = value
        return out

    def __call__(self, model) -> np.ndarray:
        """1.0 where the model's top choice is the right one, else 0.0, in item order."""
        correct = np.zeros(len(self.items))
        for i, (item, ll) in enumerate(zip(self.items, self.loglikelihoods(model), strict=True)):
            scores = ll / self._choice_bytes[i] if self.normalize else ll
            correct[i] = float(int(np.argmax(scores)) == item.answer)
        return correct
