"""mergenetic 0.1.1's per-candidate evaluation, driven one genome at a time (its own venv).

Runs under the venv that ``benchmarks/mergenetic_venv.py`` builds, never under merge3's: it
imports mergenetic, not merge3. ``e2e_mergenetic.py`` starts it with a set-up file and then sends
one genome per stdin line; each genome goes through ``problem._evaluate(x, out)``, which is what
pymoo calls per individual of mergenetic's elementwise Problem (mergenetic's ``Searcher`` is
``pymoo.minimize`` around it): its TIES merger writes a mergekit YAML and runs ``run_merge`` to a
folder, ``load_model`` reads that folder with transformers, ``metrics_4_genotype`` generates
answers to the anchor prompts (its Hugging Face route) and estimates accuracy with its gmpirt.

What had to change for a CPU-only, offline machine (everything else is mergenetic's code as is):

* Its language check (fastText ``lid.176.bin``, downloaded at run time from
  dl.fbaipublicfiles.com) cannot be fetched here: the evaluator gets a stand-in detector that
  answers "UNK", which mergenetic itself treats as "language not checked". The check costs
  microseconds per answer, so timing is unaffected.
* Its estimator reads ``tinyBenchmarks.pkl`` (downloaded from GitHub on first use): the set-up
  writes that file in the working directory with merge3's fitted item parameters in
  tinyBenchmarks' layout, so both tools estimate from the same IRT model and anchors.
* Its ``get_batched_model_predictions`` wraps the prompts in ``Question: …\nAnswer:`` *in place*
  on the shared DataFrame, so each later candidate would see the wrapper once more; the worker
  restores the original prompts before each candidate (to mergenetic's advantage: constant
  prompt length).

Protocol: stdout lines starting with ``@@result `` carry one JSON object per candidate; all other
output (mergenetic's logs, tqdm) goes to stderr or is ignored by the driver.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

PREFIX = "@@result "


class _NoLanguageCheck:
    """Stands in for mergenetic's fastText detector: every answer's language is unknown."""

    @staticmethod
    def _get_language(text: str) -> str:
        return "UNK"


def _timed(stages: dict[str, float], name: str, fn):
    """``fn`` with its wall time added to ``stages[name]`` (the stage breakdown of a candidate)."""

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def main() -> None:
    t_start = time.perf_counter()
    setup = json.loads(Path(sys.argv[1]).read_text())
    import numpy as np
    import pandas as pd
    from mergenetic.evaluation.multilingual_evaluator import MultilingualMCEvaluator
    from mergenetic.merging.ties_merger import TiesMerger
    from mergenetic.optimization import predefined_problems
    from mergenetic.optimization.predefined_problems import (
        ConfigMultiLingualPE,
        MultilingualMergingProblem,
    )

    class OfflineMCEvaluator(MultilingualMCEvaluator):
        def __init__(self, language_ids=None, validate_lang=True) -> None:
            super().__init__(language_ids, validate_lang=False)
            self.lang_detector = _NoLanguageCheck()

    predefined_problems.MultilingualMCEvaluator = OfflineMCEvaluator
    cap = setup.get("smoke_max_new_tokens")
    if cap:  # harness check only (e2e_mergenetic.py --smoke-max-new-tokens): not a measurement
        predefined_problems.get_batched_model_predictions = functools.partial(
            predefined_problems.get_batched_model_predictions, max_token=cap
        )
    t_import = time.perf_counter()

    work = Path(setup["workdir"])
    merger = TiesMerger(
        run_id="bench",
        path_to_base_model=setup["base"],
        model_paths=setup["endpoints"],
        path_to_store_yaml=str(work / "yaml"),
        path_to_store_merged_model=str(work / "merged"),
        dtype=setup["dtype"],
    )
    frames = {k: pd.DataFrame(v) for k, v in setup["search"].items()}
    prompts = {k: list(v["prompt"]) for k, v in setup["search"].items()}
    pe = setup["conf_pe"]
    conf = ConfigMultiLingualPE(
        sample_ids=pe["sample_ids"],
        weights={k: np.asarray(w, float) for k, w in pe["weights"].items()},
        thetas=[np.asarray(t, float).reshape(1, -1, 1) for t in pe["thetas"]],
        bench=pe["bench"],
        mode=pe["mode"],
    )
    n_endpoints = len(setup["endpoints"])
    problem = MultilingualMergingProblem(
        merger=merger,
        search_df_dict=frames,
        test_df_dict=None,
        config_pe=conf,
        lm_eval_tasks=None,  # the Hugging Face route (lm-eval's route is vLLM: GPU only)
        n_var=2 * n_endpoints,
        n_obj=len(frames),
        eval_batch_size=setup["eval_batch_size"],
        device="cpu",
        load_in_4bit=False,  # bitsandbytes 4-bit needs CUDA
    )
    stages: dict[str, float] = {}
    problem._from_array_to_genotype = _timed(stages, "merge_s", problem._from_array_to_genotype)
    problem.load_model = _timed(stages, "load_s", problem.load_model)
    problem.metrics_4_genotype = _timed(stages, "evaluate_estimate_s", problem.metrics_4_genotype)
    ready = {
        "ready": True,
        "import_s": t_import - t_start,
        "setup_s": time.perf_counter() - t_start,
    }
    print(PREFIX + json.dumps(ready), flush=True)

    for line in sys.stdin:
        if not line.strip():
            continue
        genome = np.asarray(json.loads(line)["genome"], float)
        for k, frame in frames.items():
            frame["prompt"] = prompts[k]  # undo the in-place wrapping of the last candidate
        stages.clear()
        out: dict = {}
        t0 = time.perf_counter()
        problem._evaluate(genome, out)
        total = time.perf_counter() - t0
        predictions = {k: [str(p) for p in frame["predictions"]] for k, frame in frames.items()}
        extracted = {
            k: [OfflineMCEvaluator._extract_answer(p) for p in v] for k, v in predictions.items()
        }
        result = {
            "wall_s": total,
            **stages,
            "objectives": [-float(f) for f in np.ravel(out["F"])],
            "merged": str(merger.path_to_store_merged_model),
            "predictions": predictions,
            "extracted": extracted,
        }
        print(PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
