# hubbub — every target installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test check bench fuzz soak clean

# The venv is (re)built when missing or older than pyproject.toml or the system package list.
$(STAMP): pyproject.toml .ci/system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	bash .ci/system-deps
	touch $(STAMP)

install: $(STAMP)

# System packages the tests start for real (.ci/system-deps lists them), via apt-get when missing.
system-deps:
	bash .ci/system-deps

run: $(STAMP)
	$(BIN)/hubbub serve --config configs/hubbub.toml

test: $(STAMP)
	$(BIN)/pytest

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check hubbub
	$(BIN)/mypy

# Every fuzz target for FUZZ_RUNS inputs (tests/fuzz; CI runs a short pass in make test).
FUZZ_RUNS ?= 1000000
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz all $(FUZZ_RUNS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Delivery under churn (tests/e2e/soak.py): 3 nodes, redis-server, thousands of
# hubbub-loadtest clients, rolling restart, node and Redis SIGKILL; non-zero on any loss.
soak: $(STAMP)
	$(BIN)/python -m tests.e2e.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
