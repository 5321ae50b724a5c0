# pluralign: the two commands a user needs are `make demo` and `make test`.
# Each one creates the virtual environment on first use; torch is pinned in the same pip
# command as everything else so pip never pulls a multi-GB CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
DEEPSPEED ?= deepspeed==0.19.8
STAMP := $(VENV)/.installed
# pytest workers: one per core this process may run on (affinity, not the host's count; tests/conftest.py
# gives each worker one thread so workers never fight over a core)
JOBS ?= $(shell $(PY) -c "import os; print(len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())")
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: setup demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[dev]"
	# DeepSpeed ships as source and its build imports torch: built against the torch just installed
	# (no build isolation, which would fetch another torch), for the tests of ZeRO-2 training
	$(BIN)/pip install --quiet --no-build-isolation "$(TORCH)" "$(DEEPSPEED)"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/pluralign demo --output outputs/demo

test: $(STAMP)
	@sh scripts/install_chromium.sh
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check pluralign tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
