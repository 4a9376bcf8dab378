"""Benchmarks as data: the item schema and loaders."""

from merge3.data.items import Item, load_jsonl_items

__all__ = ["Item", "load_jsonl_items"]
