# The two commands the README promises: `make demo` and `make test`. Both build .venv when it is
# missing or older than pyproject.toml, then run; a current venv makes set-up a no-op.
PYTHON ?= python3.11
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup test demo lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,demo,ray]"
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=15

# The main job: MERGE³ on SmolLM2-135M-Instruct + MMLU (three LoRA experts, NSGA-II, a table of
# held-out accuracy). ≤ 15 min on 2 cores from nothing, ≤ 5 min once its caches exist.
demo: $(STAMP)
	$(BIN)/merge3 demo

# Every benchmark in turn (benchmarks/run_all.py: --only, --skip, --quick, --report-only), then
# results/summary.json and the generated summary table at the top of benchmarks/README.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache
