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
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,demo]"
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check merge3 tests experiments benchmarks
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/merge3 demo

lint: $(STAMP)
	$(BIN)/ruff check merge3 tests experiments benchmarks
	$(BIN)/ruff format --check merge3 tests experiments benchmarks

format: $(STAMP)
	$(BIN)/ruff format merge3 tests experiments benchmarks
	$(BIN)/ruff check --fix merge3 tests experiments benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
