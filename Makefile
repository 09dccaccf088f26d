# Two entry points for a fresh machine: `make demo` (install + the main job) and `make test` (install + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,slurm,timm]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/prunectl compare

lint: $(BIN)/.installed
	$(BIN)/ruff check prunectl tests benchmarks scripts
	$(BIN)/mypy prunectl

test: lint
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_trainer.py
	$(BIN)/python benchmarks/bench_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
