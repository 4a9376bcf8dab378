"""Task views shared by response matrices and item banks (both hold ``items`` and ``tasks``)."""

from __future__ import annotations


class ItemsByTask:
    """Mixin for classes with parallel ``items`` and ``tasks`` tuples."""

    items: tuple[str, ...]
    tasks: tuple[str, ...]

    @property
    def task_names(self) -> list[str]:
        """Tasks in order of first appearance."""
        return list(dict.fromkeys(self.tasks))

    def items_by_task(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {t: [] for t in self.task_names}
        for item, task in zip(self.items, self.tasks, strict=True):
            out[task].append(item)
        return out
