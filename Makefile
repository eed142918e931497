# Two commands: `make run` (install + dvc repro) and `make test` (install + tests).
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install run quick table test test-fast bench clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro

# Every stage once on tiny budgets, as the experiment `quick` (the workspace stays as it is);
# SET passes more overrides, e.g. make quick SET="-S data.source=/path/archive.tar.gz -S data.md5=..."
quick: install
	python -m cifarbudget.quick $(SET)

# The experiments' names, the params that differ between them and the headline metrics;
# ARGS go to `dvc exp show`, e.g. make table ARGS="-A --sort-by test_acc.mean --sort-order desc"
table: install
	python -m cifarbudget.table $(ARGS)

# One worker per core, a test file to a worker (its module fixtures are built once); each test
# runs on one thread, so the workers do not fight over the cores. The ten slowest tests are
# listed at the end: the suite should stay under about 15 minutes on 2 cores.
PYTEST_WORKERS ?= auto

test: install
	pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=10

test-fast: install
	pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

bench: install
	python bench/bench_classifier.py
	python bench/bench_gan.py

clean-venv:
	rm -rf $(VENV)
