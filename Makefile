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

# Three workers on the 2 cores, whole files each: the integration tests spend most of their time
# waiting on Flower's polling, process starts and round timeouts (with two workers the cores were
# busy 45 % of the suite's wall time), so a third worker fills that wait. --no-loadscope-reorder
# keeps the order of tests/conftest.py (longest modules first) instead of xdist's largest-file-first.
test: $(STAMP)
	$(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder

clean-venv:
	rm -rf $(VENV)
