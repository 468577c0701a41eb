# The two commands of the README: `make demo` and `make test`. Both set up .venv themselves.
# Python: the newest supported one that runs on this machine (3.13, 3.12, then 3.11);
# override with `make PYTHON=/path/to/python3.x ...`.
PYTHON ?= $(shell for v in 3.13 3.12 3.11; do python$$v -c 'import sys' >/dev/null 2>&1 && { echo python$$v; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# mypy cannot share an environment with clkhash (clkhash pins mypy_extensions<0.5, mypy
# needs >= 1.0): it lives in its own and checks the code against .venv's packages.
MYPY_VENV := .venv-mypy
MYPY_STAMP := $(MYPY_VENV)/.installed

.PHONY: install demo test lint typecheck check bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "pprl needs Python 3.11, 3.12 or 3.13 on the PATH (with venv and its headers, e.g."; \
	  echo "Debian's python3-venv and python3-dev) and a C++ compiler (g++) for anonlink on 3.12 and 3.13;"; \
	  echo "or pass PYTHON=/path/to/python3.x"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' || \
	  { echo "$(PYTHON) is not Python 3.11 to 3.13; pass PYTHON=/path/to/python3.x"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools<82" wheel
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres,dask]"
	touch $(STAMP)

$(MYPY_STAMP): pyproject.toml
	test -x $(MYPY_VENV)/bin/python || $(PYTHON) -m venv $(MYPY_VENV)
	$(MYPY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MYPY_VENV)/bin/python -m pip install --quiet "mypy==2.4.1" types-PyYAML
	touch $(MYPY_STAMP)

demo: install
	$(BIN)/python -m cli.demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install $(MYPY_STAMP)
	$(MYPY_VENV)/bin/mypy --python-executable $(BIN)/python

# What CI runs: lint, types, then the tests.
check: lint typecheck test

bench: install
	$(BIN)/python bench/encode.py
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) $(MYPY_VENV) demo-output .pytest_cache .hypothesis .mypy_cache .ruff_cache
