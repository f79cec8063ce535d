# Community Pulse — one command surface. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv run test test-unit test-integration lint format bench profile clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with dev extras

run: $(STAMP) ## start the platform on embedded defaults with a simulated community
	$(BIN)/pulse up --simulate

test: $(STAMP) ## the whole suite: unit, integration (real broker + ClickHouse), e2e, doctests
	$(BIN)/pytest

test-unit: $(STAMP) ## only the fast tests without I/O
	$(BIN)/pytest -m unit

lint: $(STAMP) ## ruff + mypy (strict, with the ratchet in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and import order
	$(BIN)/ruff check --fix --select I .
	$(BIN)/ruff format .

bench: $(STAMP) ## whole-pipeline figures vs Faust and raw Kafka -> bench/results.json (BENCH_ARGS=--quick)
	$(BIN)/python -m bench $(BENCH_ARGS)

profile: $(STAMP) ## py-spy profile of `pulse replay` of 115,942 simulated events (speedscope file)
	rm -rf .pulse-profile
	$(BIN)/pulse simulate --members 2000 --days 120 --seed 5 --out .pulse-profile/events.jsonl
	PULSE_DATA_DIR=.pulse-profile/data $(BIN)/py-spy record --rate 100 --format speedscope \
		-o .pulse-profile/replay.speedscope.json -- $(BIN)/pulse replay .pulse-profile/events.jsonl
	@echo "open .pulse-profile/replay.speedscope.json in https://www.speedscope.app"

clean: ## remove the environment and local data
	rm -rf $(VENV) .pulse .pulse-profile .pytest_cache .mypy_cache .ruff_cache
