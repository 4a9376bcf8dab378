"""Benchmarks as data: the item schema and loaders."""

from merge3.data.files import items_from_rows, load_items, read_rows
from merge3.data.items import Excluded, Item, load_jsonl_items
from merge3.data.spec import load_benchmark
from merge3.data.tasks import Benchmark, Generation, Task, sample_items

__all__ = [
    "Benchmark",
    "Excluded",
    "Generation",
    "Item",
    "Task",
    "items_from_rows",
    "load_benchmark",
    "load_items",
    "load_jsonl_items",
    "read_rows",
    "sample_items",
]
