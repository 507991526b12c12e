# prober's front door. `make run` for the demo, `make test` for the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCENARIO ?=
SPEED ?= 1
ARGS ?=

.PHONY: run test lint format bench soak fleet clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## run: the simulated platform plus the daemon probing it with checks/ (Ctrl-C stops both)
run: $(STAMP)
	$(BIN)/prober demo --config.file prober.yml $(if $(SCENARIO),--scenario $(SCENARIO) --speed $(SPEED)) $(ARGS)

## test: lint, type-check and the whole test suite (integration tests need promtool/prometheus)
test: $(STAMP) lint
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: prober against blackbox_exporter (uvloop from the fast extra); writes docs/PERFORMANCE.md
bench: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,fast]'
	$(BIN)/python -m bench.run $(ARGS)

soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

## fleet: 8 sharded daemons, 1,000 checks each, one real Prometheus; writes docs/SCALING.md (<= 8 min)
fleet: $(STAMP)
	$(BIN)/python -m bench.fleet $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
