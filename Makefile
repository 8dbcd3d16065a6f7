# Everything a fresh machine with Python 3.11 needs: `make run`, `make test` (or `make test-unit`, `make test-e2e`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test test-unit test-e2e bench demo rollout-demo drift-demo clean

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

test-unit: install  ## the unit tests alone (tests/unit): in process, no child processes or sockets; fast
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-e2e: install  ## the end-to-end tests alone (tests/e2e): real gateway, worker, emulator and Redis processes on 127.0.0.1
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

bench: install  ## the latency/throughput sweep of bench/
	$(BIN)/python bench/sweep.py $(ARGS)

demo: install  ## the hybrid scheduler live: bursty load, where batches went, what they cost
	$(BIN)/python bench/demo.py $(ARGS)

rollout-demo: install  ## two rollouts under load: a slow version rolled back, a good one promoted
	$(BIN)/python bench/rollout_demo.py

drift-demo: install  ## the demo model watched for drift: one input feature moved by half a standard deviation
	$(BIN)/python bench/drift_demo.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
