# prober's front door. `make run` for the demo, `make test` for the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCENARIO ?=
SPEED ?= 1
ARGS ?=

.PHONY: run test test-load lint format bench soak detect fleet clean

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

## test-load: the whole suite while one core is kept busy, RUNS times in a row (default 3);
## CI shares its machine, so the suite must pass on a loaded one. The busy loop ends with it.
RUNS ?= 3
test-load: $(STAMP)
	@timeout 7200 sh -c 'while :; do :; done' & busy=$$!; \
	trap 'kill $$busy 2>/dev/null' EXIT INT TERM; \
	for run in $$(seq $(RUNS)); do \
	  echo "== test-load: run $$run of $(RUNS), one core busy"; \
	  $(MAKE) --no-print-directory test || exit 1; \
	done

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
	@command -v prometheus-blackbox-exporter >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
	  echo "bench: installing Debian's prometheus-blackbox-exporter (the comparison)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus-blackbox-exporter >/dev/null; }
	$(BIN)/python -m bench.run $(ARGS)

## detect: replay outages against the shipped checks, intervals and rules with a real
## Prometheus; writes docs/DETECTION.md (about 20 minutes; needs Debian's prometheus)
detect: $(STAMP)
	$(BIN)/python -m bench.detect $(ARGS)

soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

## fleet: 8 sharded daemons, 1,000 checks each, one real Prometheus; writes docs/SCALING.md (<= 8 min)
fleet: $(STAMP)
	$(BIN)/python -m bench.fleet $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
