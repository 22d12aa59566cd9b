# Everyday commands. Each runs in the venv at $(VENV) (made by `make setup`), so `python -m scripts`
# inside dvc.yaml, pytest and the linters all come from it. CONTRIBUTING.md explains the workflow.
VENV ?= .venv
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help setup repro test test-fast lint bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup:  ## the venv with runtime and test dependencies, pinned by constraints.txt (README command 2's install)
	test -d $(VENV) || python3 -m venv $(VENV)
	python -m pip install -q -r requirements-dev.txt

repro:  ## build every stage (tiny model, sample sources, all releases)
	dvc repro

test:  ## the whole suite: the slow tier (pipeline build, PR workflow, Ray clusters) included, ~25 minutes
	python -m pytest -q -m "slow or not slow"

test-fast:  ## every test but the slow tier, what CI (.ci/run) and README command 2 run: ~4 minutes
	python -m pytest -q

lint:  ## ruff check, ruff format --check and mypy scripts/lib, as the pre-commit hooks run them
	pre-commit run --all-files

bench:  ## the CPU benchmarks at their documented sizes, printed (docs/benchmarks.md says how to record them)
	python benchmarks/clean_bench.py
	python benchmarks/dedup_bench.py --1m
	python benchmarks/ingest_bench.py
	python benchmarks/progress_bench.py
	python benchmarks/generate_bench.py
