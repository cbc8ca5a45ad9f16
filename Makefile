# hubbub — every target installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test check bench clean

# The venv is (re)built when missing or older than pyproject.toml.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@command -v redis-server >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	touch $(STAMP)

install: $(STAMP)

# System packages the tests need (redis-server), via apt-get when missing.
system-deps:
	@if ! command -v redis-server >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server; \
	fi

run: $(STAMP)
	$(BIN)/hubbub serve --config configs/hubbub.toml

test: $(STAMP)
	$(BIN)/pytest

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check protocol cluster server client loadtest
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
