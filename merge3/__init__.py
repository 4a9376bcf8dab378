"""merge3: evolutionary model merging with anchor extraction and IRT accuracy estimation.

The package follows the three E's of MERGE³: ``extract`` picks anchor items, ``estimate`` turns
anchor correctness into full-benchmark accuracy, ``evolve`` searches merge recipes with pymoo.
"""

__version__ = "0.1.0"
