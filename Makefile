# xchange: the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# Two pytest-xdist workers, each test file on one (docs/decisions.md); PYTEST_ARGS="" for one.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test lint typecheck check bench clean

# The venv is (re)built only when pyproject.toml changes; the stamps make it idempotent.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	@touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/xchange demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

check: lint test

# The benchmark (docs/performance.md).  QUICK=1: a short run; BENCH_ARGS: more options of
# `xchange bench`.  wrk, the load generator, is a Debian package: installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench: $(VENV)/.installed
	@command -v wrk >/dev/null 2>&1 || { \
	    echo "bench: wrk (the load generator) is missing; installing it: apt-get install wrk"; \
	    $(SUDO) apt-get install -y -q wrk || { $(SUDO) apt-get update -q && \
	    $(SUDO) apt-get install -y -q wrk; }; }
	$(BIN)/xchange bench $(if $(QUICK),--quick) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
