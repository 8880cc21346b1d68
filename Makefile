# fastseg: every target creates the virtual environment it needs (make install is a no-op when
# .venv is up to date with requirements.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The run `make evaluate` scores: RUN=..., else the newest run in runs/, else the demo's SegNet run.
RUN ?= $(shell ls -td runs/*/best.safetensors 2>/dev/null | head -1 | xargs -r dirname)
DEMO_RUN = $(lastword $(sort $(wildcard demo/runs/segnet-*)))

.PHONY: install lock test test-slow test-floor docs mutate demo demo-sweep evaluate bench lint gpu-check

install: $(STAMP)

# Every dependency at the version and hash requirements.lock names (pip itself included), then fastseg
# with no dependency of its own to resolve: the same environment on every machine.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve requirements.lock from pyproject.toml (runtime + dev), newest versions allowed, torch held at
# lock-constraints.txt; about 10 minutes (pip-compile downloads every candidate to hash it).
lock: install
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --upgrade --allow-unsafe --generate-hashes \
		--strip-extras --extra dev --no-emit-index-url --no-emit-find-links --constraint lock-constraints.txt \
		--output-file requirements.lock pyproject.toml

# The site (mkdocs, strict: a broken link or a missing page fails) in site/.
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# The fast suite on the lowest versions pyproject.toml declares (uv's lowest-direct resolution: every direct
# dependency at its floor), in its own environment .venv-floor. Not in CI: it downloads old torch builds.
FLOOR := .venv-floor
test-floor:
	$(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/pip install --quiet uv
	$(FLOOR)/bin/uv pip install --quiet --python $(FLOOR)/bin/python --resolution lowest-direct -e '.[dev]'
	$(FLOOR)/bin/python -m pytest -q -p no:cacheprovider --ignore tests/test_install.py

# Mutation testing of the modules whose numbers users read (TESTING.md): each mutant is run against the
# tests that reach its function, 2 at a time; MODULES=... narrows it (e.g. MODULES="evaluate.metrics").
# One torch thread per worker: two workers of two threads each on 2 cores ran about 30 % slower.
# FASTSEG_MUTATE=1: tests/conftest.py freezes the warmed-up heap the workers fork from.
MODULES ?= evaluate.metrics evaluate.tta io.atomic io.serialize data.stats data.masks evaluate.predict \
	data.checks evaluate.scoring evaluate.export
mutate: install
	FASTSEG_MUTATE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 $(BIN)/mutmut run --max-children $(or $(JOBS),2) $(foreach m,$(MODULES),"fastseg.$(m).*")
	$(BIN)/python tools/mutation_scores.py

demo: install
	$(BIN)/fastseg demo --out demo

# The demo once per seed (about 5 minutes each): a table of seed, threads, mIoU and seconds, and demo-sweep/demo_sweep.json.
demo-sweep: install
	$(BIN)/fastseg demo --out demo-sweep --seeds 0,1,2,3,4

evaluate: install
	$(BIN)/fastseg evaluate $(or $(RUN),$(DEMO_RUN))

bench: install
	$(BIN)/fastseg bench --out BENCHMARKS.md

lint: install
	$(BIN)/ruff check .

# On a lent GPU machine (no .venv: that machine's python3, with wheels carried in .whl/): the CUDA test
# set, a timed fit, the loader, bench and doctor; results in gpu-check/ (README, "GPU check").
gpu-check:
	tools/gpu_check.sh --out gpu-check $(ARGS)
