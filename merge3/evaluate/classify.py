"""Sequence classification: one linear head per task on a shared (merged) encoder.

The SentEval study merges encoders fine-tuned per task; each task keeps its own head, fitted
once on its endpoint's features. A call encodes every item of every task in one pass over the
shared encoder (inputs tokenised and length-sorted at construction), pools the last hidden
state (mean over real tokens, or the first token) and applies each task's head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from merge3.data.items import Excluded, Item


class ClassificationEvaluator:
    """Per-item correctness of ``head[task](pool(encoder(text)))`` for each task."""

    def __init__(
        self,
        tasks: Mapping[str, Sequence[Item]],
        tokenizer,
        heads: Mapping[str, torch.nn.Module] | None = None,
        batch_size: int = 64,
        max_length: int = 128,
        pooling: str = "mean",
        device: str = "cpu",
    ) -> None:
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.tasks = {t: list(items) for t, items in tasks.items()}
        self.heads = dict(heads or {})
        self.pooling = pooling
        self.device = device
        self.excluded: list[Excluded] = []
        flat = [(t, k, item) for t, items in self.tasks.items() for k, item in enumerate(items)]
        self._valid = {t: np.ones(len(items), bool) for t, items in self.tasks.items()}
        keep = []
        for t, k, item in flat:
            if not isinstance(item.answer, int | np.integer) or not (
                0 <= int(item.answer) < max(len(item.choices), 1)
            ):
                self._valid[t][k] = False
                self.excluded.append(Excluded(item.id, t, f"label {item.answer!r} out of range"))
            else:
                keep.append((t, k, item))
        lengths = [
            len(tokenizer(i.question, truncation=True, max_length=max_length)["input_ids"])
            for _, _, i in keep
        ]
        order = np.argsort(lengths, kind="stable")[::-1]
        self._batches = []
        for s in range(0, len(order), batch_size):
            part = [keep[int(j)] for j in order[s : s + batch_size]]
            enc = tokenizer(
                [i.question for _, _, i in part],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            self._batches.append(
                ([(t, k) for t, k, _ in part], {n: v.to(device) for n, v in enc.items()})
            )

    @torch.inference_mode()
    def features(self, encoder) -> dict[str, torch.Tensor]:
        """Pooled sentence features per task, in item order (zeros for excluded items)."""
        out = {t: None for t in self.tasks}
        for owners, enc in self._batches:
            hidden = encoder(**enc).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            pooled = pooled.float()
            for (t, k), vec in zip(owners, pooled, strict=True):
                if out[t] is None:
                    out[t] = torch.zeros(len(self.tasks[t]), pooled.shape[1], device=vec.device)
                out[t][k] = vec
        return {
            t: (f if f is not None else torch.zeros(len(self.tasks[t]), 1)) for t, f in out.items()
        }

    def __call__(self, encoder) -> dict[str, np.ndarray]:
        """Per task: 1.0/0.0 per item (NaN: excluded)."""
        feats = self.features(encoder)
        result = {}
        with torch.inference_mode():
            for t, items in self.tasks.items():
                if t not in self.heads:
                    raise KeyError(f"no classification head for task {t!r}")
                pred = self.heads[t](feats[t].to(next(self.heads[t].parameters()).dtype))
                pred = pred.argmax(-1).cpu().numpy()
                gold = np.array(
                    [int(i.answer) if isinstance(i.answer, int | np.integer) else -1 for i in items]
                )
                correct = (pred == gold).astype(float)
                correct[~self._valid[t]] = np.nan
                result[t] = correct
        return result


def fit_head(
    features: torch.Tensor,
    labels: Sequence[int],
    n_classes: int,
    weight_decay: float = 1e-3,
    steps: int = 100,
) -> torch.nn.Linear:
    """A logistic-regression head (L-BFGS, L2) on fixed features: cheap and deterministic."""
    x = features.detach().float().clone()  # may come from inference mode
    y = torch.as_tensor(list(labels), dtype=torch.long)
    head = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss = loss + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.eval()


def save_heads(heads: Mapping[str, torch.nn.Linear], path) -> None:
    """Heads as one safetensors file: ``TASK.weight`` / ``TASK.bias``."""
    from safetensors.torch import save_file

    tensors = {}
    for task, head in heads.items():
        tensors[f"{task}.weight"] = head.weight.detach().contiguous()
        tensors[f"{task}.bias"] = head.bias.detach().contiguous()
    save_file(tensors, str(path))


def load_heads(path) -> dict[str, torch.nn.Linear]:
    from safetensors.torch import load_file

    from merge3.errors import ModelError

    try:
        tensors = load_file(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read classification heads ({exc})") from None
    heads = {}
    for key in tensors:
        if key.endswith(".weight"):
            task = key[: -len(".weight")]
            w, b = tensors[key], tensors.get(f"{task}.bias")
            head = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                head.weight.copy_(w)
                head.bias.copy_(b if b is not None else torch.zeros(w.shape[0]))
            heads[task] = head.eval()
    return heads
