# Set-up is part of every target: a fresh machine needs only `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-fast demo bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)  ## the whole suite, slow end-to-end tests included (as CI runs it)
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## pure-logic and Keras-helper tests only
	$(BIN)/python -m pytest -m "not slow"

demo: $(STAMP)  ## 5-fold CV search on digits, on an embedded local Ray
	$(BIN)/glimr-cv demo

bench: $(STAMP)
	$(BIN)/python benchmarks/racing.py --quick

clean:
	rm -rf $(VENV) glimr_cv_results .pytest_cache
