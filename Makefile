# hubcensus — `make demo` serves the bundled real snapshot; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: install demo test test-faults lint typecheck pytest clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## create .venv with the project (editable) and dev dependencies

demo: install ## import the bundled 2022-02-21 crawl if needed, serve on :$(PORT)
	$(BIN)/hubcensus demo --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q -m "not faults"

test-faults: install ## the fault-injection suite (slow: about 5 minutes)
	$(BIN)/pytest -q -m faults tests/faults

test: lint typecheck pytest ## everything CI checks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

.PHONY: bench bench-quick

bench: install ## benchmarks at N=100,000 and 2,000,000, history over 100 weekly snapshots, then the archive at 2,000,000 (about 40 min once the generated Hubs are cached in benchmarks/data/; ~11 GB of disk for a while)
	$(BIN)/python -m benchmarks.bench
	$(BIN)/python -m benchmarks.archive --n 2000000

bench-quick: install ## CI-sized benchmark (N=20,000, about 1.5 minutes); fails on a gross regression of a ratio
	$(BIN)/python -m benchmarks.bench --quick
