# Set-up is part of every target: a fresh machine needs only `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-fast test-compat lint demo bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# Two pytest workers, a test file each at a time (its module fixtures run once); the notebooks' small
# runs go on in the controller meanwhile. Most of a test's time is Ray and TensorFlow starting up.
PYTEST_WORKERS ?= 2
test: $(STAMP)  ## the linter, then the whole suite, slow end-to-end tests included (as CI runs it)
	$(BIN)/ruff check glimr_cv tests benchmarks
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test-fast: $(STAMP)  ## pure-logic and Keras-helper tests only
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check glimr_cv tests benchmarks

# The oldest and the newest Ray that setup.cfg allows, each in a venv of its own (about 3 GB and a few
# minutes to install each): the compat module's private names and the whole suite against both.
COMPAT_RAY ?= 2.41.0 2.60.0
test-compat:
	@for v in $(COMPAT_RAY); do \
	  dir=.venv-ray$$v; \
	  [ -f $$dir/.installed-stamp ] || { $(PYTHON) -m venv $$dir && $$dir/bin/python -m pip install --quiet --upgrade pip \
	    && $$dir/bin/python -m pip install --quiet -e ".[test]" "ray[tune,serve]==$$v" && touch $$dir/.installed-stamp; } \
	    || exit 1; \
	  echo "== Ray $$v"; $$dir/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_ARGS) || exit 1; \
	done

demo: $(STAMP)  ## 5-fold CV search on digits, on an embedded local Ray
	$(BIN)/glimr-cv demo

bench: $(STAMP)
	$(BIN)/python benchmarks/racing.py --quick

clean:
	rm -rf $(VENV) .venv-ray* glimr_cv_results .pytest_cache
