"""EVOLVE: genomes from operators, the pymoo problem, and the resumable search loop."""

from merge3.evolve.runner import resume_search, start_search

__all__ = ["resume_search", "start_search"]
