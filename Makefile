# The two commands: `make book` and `make test`. Both set everything up first and are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two cores in CI: keep BLAS and torch from oversubscribing them.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Every executed page records its per-cell times here (sgdnoise.book.record_cell_times); the execution-statistics
# page renders them.
export SGDNOISE_CELL_TIMES ?= $(CURDIR)/_build/cell_times
# The same floating-point arithmetic on every x86 machine: torch's AVX2 kernels and MKL's AVX2 code path even
# where AVX-512 is available. Training runs are chaotic in rounding, so without this the same seeds end
# differently on machines with other vector units (measured: chapter 4's SGD at eta = 0.8 reaches loss 0.30
# with the AVX-512 kernels and 4.15 with the AVX2 ones); with it, a build reproduces the book's numbers.
export ATEN_CPU_CAPABILITY ?= avx2
export MKL_CBWR ?= AVX2

.PHONY: book book-students pdf test pytest setup bench clean browser-deps browser determinism snapshot experiments

MATHJAX := .cache/static/mathjax/tex-chtml.js

setup: $(STAMP) $(MATHJAX)

# MathJax 3 from the npm registry, copied into the book's static files: the book renders offline.
$(MATHJAX):
	npm install --silent --no-audit --no-fund --prefix .cache/npm mathjax@3.2.2
	rm -rf .cache/static/mathjax && mkdir -p .cache/static
	cp -r .cache/npm/node_modules/mathjax/es5 .cache/static/mathjax

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') and '+cu' not in v else 'unexpected torch ' + v)"
	touch $(STAMP)

# -W: warnings are errors; -n: every reference must resolve; --keep-going: report them all. Then each chapter as
# a notebook for plain Jupyter (no MyST left, the build's numbers in its text), where its page's download link
# points (_static/notebooks); notebooks from older builds' static files are removed first.
book: $(STAMP) $(MATHJAX)
	rm -rf .cache/static/notebooks
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going
	$(BIN)/python scripts/student_notebook.py --from-build _build
	$(BIN)/python scripts/check_build.py _build

# The book without the exercises' solutions, for handing out problem sets: the same pages, rendered with
# sphinx-exercise's hide_solutions into _build_students/_build/html, reusing the executions of the last `make book`
# (its jupyter-cache), then checked: every exercise present, no solution left.
book-students: $(STAMP) $(MATHJAX)
	@mkdir -p _build
	$(BIN)/python scripts/students_config.py _config.yml $(CURDIR)/_build/.jupyter_cache > _build/_config_students.yml
	$(BIN)/jupyter-book build . --config _build/_config_students.yml --path-output _build_students --builder html -W -n --keep-going
	$(BIN)/python scripts/student_notebook.py --from-build _build_students/_build --no-solutions
	$(BIN)/python scripts/check_build.py _build_students/_build --students

# Test-only extras: transformers without its dependencies (it must not pull another torch), then the check
# that the pinned CPU torch is still the one installed.
EXTRAS := $(VENV)/.extras
TRANSFORMERS := transformers==5.23.0
$(EXTRAS): requirements-extras.txt $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-extras.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(TRANSFORMERS)
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') and '+cu' not in v else 'unexpected torch ' + v)"
	$(BIN)/python -c "import transformers; assert transformers.__version__ == '5.23.0', transformers.__version__"
	touch $@

pytest: $(STAMP) $(EXTRAS)
	$(BIN)/python -m pytest

# Debian's Chromium and its driver, for the browser test (no browser is downloaded by a test tool).
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; fi

# Every page of the built book in headless Chromium, offline; screenshots in _build/screenshots.
browser: browser-deps $(STAMP)
	$(BIN)/python scripts/browser_check.py _build

# The whole book as one PDF (_build/pdf/book.pdf), printed page by page by the same offline Chromium, joined in the
# book's order and checked: every page present, figures embedded, no raw TeX.
pdf: browser-deps $(STAMP)
	$(BIN)/python scripts/make_pdf.py _build

# Every glued number and ledger table of the build must equal the committed reference
# (results/book_numbers.json); `make snapshot` rewrites it from a build when a result changes on purpose.
determinism: $(STAMP)
	$(BIN)/python scripts/determinism_check.py _build

snapshot: $(STAMP)
	$(BIN)/python scripts/determinism_check.py --update _build

# Recompute the committed full-scale results (results/*.json), on a GPU when one is present.
experiments: $(STAMP)
	$(BIN)/python -m sgdnoise.experiments.fullscale --device auto

test: pytest book book-students browser pdf determinism

# Benchmarks against peers (benchmark-only installs, never needed by the book or the tests).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c benchmarks/constraints.txt -r benchmarks/requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c benchmarks/constraints.txt --no-deps backpack-for-pytorch==1.7.1 curvlinops-for-pytorch==3.0.1 k-diffusion==0.1.1.post1 devinterp==1.3.2
	$(BIN)/python benchmarks/per_sample_grads.py
	$(BIN)/python benchmarks/noise_spectrum.py
	$(BIN)/python benchmarks/sde_ou.py
	$(BIN)/python benchmarks/sde_step_mlp.py
	$(BIN)/python benchmarks/audit_tracker.py
	$(BIN)/python benchmarks/sigma_topk_peers.py
	$(BIN)/python benchmarks/gns_peers.py
	$(BIN)/python benchmarks/audit_sketch.py
	$(BIN)/python benchmarks/llc_peer.py

clean:
	rm -rf _build _build_students
