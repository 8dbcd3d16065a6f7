# Everything a fresh machine with Python 3.11 needs: `make run`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install  ## serve the demo model on http://127.0.0.1:8000
	$(BIN)/sluice serve $(ARGS)

test: install  ## the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install  ## the latency/throughput sweep of bench/
	$(BIN)/python bench/sweep.py $(ARGS)

demo: install  ## the hybrid scheduler live: bursty load, where batches went, what they cost
	$(BIN)/python bench/demo.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
