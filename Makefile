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

# Until `merge3 demo` (SmolLM2 + MMLU) lands, the main job is the tiny end-to-end search.
DEMO_RUN ?= runs/demo-tiny-$(shell date +%Y%m%d-%H%M%S)
demo: $(STAMP)
	$(BIN)/merge3 search experiments/configs/tiny.yaml --run-dir $(DEMO_RUN)
	$(BIN)/merge3 front $(DEMO_RUN) --json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache
