# The two commands: `make book` and `make test`. Both set everything up first and are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two cores in CI: keep BLAS and torch from oversubscribing them.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test pytest setup bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') and '+cu' not in v else 'unexpected torch ' + v)"
	touch $(STAMP)

# -W: warnings are errors; -n: every reference must resolve; --keep-going: report them all.
book: $(STAMP)
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going
	$(BIN)/python scripts/check_build.py _build

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: pytest book

# Benchmarks against peers (benchmark-only installs, never needed by the book or the tests).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c benchmarks/constraints.txt -r benchmarks/requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c benchmarks/constraints.txt --no-deps backpack-for-pytorch==1.7.1
	$(BIN)/python benchmarks/per_sample_grads.py
	$(BIN)/python benchmarks/noise_spectrum.py
	$(BIN)/python benchmarks/sde_ou.py
	$(BIN)/python benchmarks/sde_step_mlp.py

clean:
	rm -rf _build
