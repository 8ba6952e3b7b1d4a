# The two commands of the README: `make demo` and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cardiotwin-installed
PYTHON312 := $(shell bash scripts/find_python312.sh)
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_system.sh scripts/install_python_deps.sh
	@bash scripts/setup_system.sh
	@if [ ! -x $(PY) ]; then \
	  if [ -z "$(PYTHON312)" ]; then echo "error: Python 3.12 not found (install python3.12 or pyenv 3.12)"; exit 1; fi; \
	  echo "creating $(VENV) with $(PYTHON312)"; $(PYTHON312) -m venv $(VENV); fi
	bash scripts/install_python_deps.sh $(VENV)
	@touch $(STAMP)

demo: setup
	bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -ra --timeout=900 $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -ra -m slow --timeout=3600 $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
