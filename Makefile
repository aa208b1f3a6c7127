# The two set-up commands: `make serve` (optimise the bundled demos, then serve them)
# and `make test` (lint, type-check and run the whole test suite). Both build .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export BENTOML_DO_NOT_TRACK := true

.PHONY: serve optimise test lint tools bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# setuptools warns on every editable install that folders named like the packages shadow them
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

optimise: $(STAMP)
	$(BIN)/leanserve optimise --model digits --time-budget 45
	$(BIN)/leanserve optimise --model minilm
	$(BIN)/leanserve models list

serve: optimise
	$(BIN)/leanserve serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Debian packages the tests need (root and apt): prometheus (promtool, and a real server for the
# scrape test); wordnet-base, fortunes: the distillation corpus; wrk, nghttp2-client
# (h2load): the C load generators of benchmarks/serving_bench.py, tested in tests/unit/benchmarks.
TOOLS_PACKAGES := prometheus wordnet-base fortunes wrk nghttp2-client
tools:
	@command -v promtool >/dev/null && command -v wrk >/dev/null && command -v h2load >/dev/null \
		&& test -f /usr/share/wordnet/data.noun -a -d /usr/share/games/fortunes \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(TOOLS_PACKAGES) >/dev/null; }

test: lint tools
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/optimise_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
