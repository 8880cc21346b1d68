# fastseg: every target creates the virtual environment it needs (make install is a no-op when
# .venv is up to date with pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?=

.PHONY: install test test-slow demo evaluate bench lint

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/fastseg demo --out demo

evaluate: install
	$(BIN)/fastseg evaluate $(RUN)

bench: install
	$(BIN)/fastseg bench --out BENCHMARKS.md

lint: install
	$(BIN)/ruff check .
