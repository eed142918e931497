# Two commands: `make run` (install + dvc repro) and `make test` (install + tests).
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install run test test-fast bench clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro

test: install
	pytest -q

test-fast: install
	pytest -q -m "not slow"

bench: install
	python bench/bench_classifier.py
	python bench/bench_gan.py

clean-venv:
	rm -rf $(VENV)
