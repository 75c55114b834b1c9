# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv on first use; it is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[test]"
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(0 if v.endswith('+cpu') or torch.cuda.is_available() else 'torch is not the local CPU build: ' + v)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stsfl demo

# Lint (ruff), format (ruff format --check) and the layer rules (import-linter, pyproject.toml) first.
# Two workers, whole files each (--dist loadfile). --no-loadscope-reorder keeps the module order of
# tests/conftest.py (xdist would otherwise start with the files that hold the most tests and leave
# the one-test real-process federations for the end). A third worker was slower (14:52 against
# 14:07): three real-process federations at once overloaded the 2 cores.
test: $(STAMP)
	@.ci/install-browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

clean-venv:
	rm -rf $(VENV)
