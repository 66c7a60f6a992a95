# The two set-up commands of the README: `make demo` and `make test` (also what .ci/run calls).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# The CPU build of PyTorch; installed first so that the train extra's range is met without a CUDA download.
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench soak fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[train,test]'
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/edge-agent demo $(ARGS)

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

bench: $(VENV)/.dev
	$(BIN)/python -m tests.benchmarks $(ARGS)

# Long fault and fuzz runs, not part of `make test` (see docs/reliability.md), e.g.
# make soak ARGS="--rounds 1000"   make fuzz ARGS="--inputs 1000000"
soak: $(VENV)/.dev
	$(BIN)/python -m tests.harness.soak $(ARGS)

fuzz: $(VENV)/.dev
	$(BIN)/python -m tests.harness.fuzz $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .hypothesis
