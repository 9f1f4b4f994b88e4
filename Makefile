# rtnb: every target creates .venv and installs the project into it when needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rtnb-installed
PORT ?= 8888
PYTHON ?= python3
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: demo test lint bench lab docs venv services chromium clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

## demo: JupyterLab on 127.0.0.1 with the quickstart notebook (replay of the bundled data)
## (the token travels in JUPYTER_TOKEN, not on the command line where `ps` shows it)
demo: venv
	@TOKEN=$${RTNB_LAB_TOKEN:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(24))')}; \
	echo ""; \
	echo "  rtnb demo: open http://127.0.0.1:$(PORT)/lab/tree/notebooks/01-quickstart.ipynb?token=$$TOKEN"; \
	echo "  (Run > Run All Cells, then move the window slider; Ctrl-C here stops JupyterLab)"; \
	echo ""; \
	JUPYTER_TOKEN="$$TOKEN" exec $(PY) -m jupyter lab --ip=127.0.0.1 --port=$(PORT) \
	  --no-browser $(ROOT_FLAG) --ServerApp.root_dir="$(CURDIR)" \
	  notebooks/01-quickstart.ipynb

## lab: JupyterLab on 127.0.0.1 over the whole repository
lab: venv
	@TOKEN=$${RTNB_LAB_TOKEN:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(24))')}; \
	echo "  rtnb lab: http://127.0.0.1:$(PORT)/lab?token=$$TOKEN"; \
	JUPYTER_TOKEN="$$TOKEN" exec $(PY) -m jupyter lab --ip=127.0.0.1 --port=$(PORT) \
	  --no-browser $(ROOT_FLAG) --ServerApp.root_dir="$(CURDIR)"

## test: lint, unit + property + doctests, notebooks (nbval), fault and browser tests; the fault
## and browser tests run in a second pytest process beside the others (tools/run_tests.sh)
test: venv services chromium lint
	@PY=$(PY) tools/run_tests.sh

## lint: ruff, mypy --strict, import layers and cycles, notebooks committed without outputs
lint: venv
	$(PY) -m ruff check rtnb tests bench data
	$(PY) -m mypy
	$(PY) tools/check_imports.py
	$(PY) tools/check_notebooks.py notebooks

## bench: speed and memory benchmarks; results in bench/RESULTS.md
bench: venv
	$(PY) bench/run.py

## docs: the docs site in docs/_build/html (notebooks rendered, not executed; the API from the
## docstrings); warnings and broken cross-references are errors (tests/docs builds it too)
docs: venv
	$(PY) -m sphinx -b html -W --keep-going -n -q docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

services:
	@tools/services.sh

chromium:
	@tools/ensure-chromium.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis
