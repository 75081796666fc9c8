# Two commands do all set-up on a fresh Linux machine with Python 3.11:
#   make book   -> .venv, requirements, exercises/ regenerated, HTML book in _build/html
#   make test   -> the same environment, then the whole test suite
# Everything is installed from the package registries (PyPI, npm) at set-up time;
# nothing downloads at run time.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# MathJax 3 from the npm registry, checked against a pinned SHA-256, copied into the
# folder that _config.yml names in html_extra_path (served from the book's own files).
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX_DIR := book/_mathjax/mathjax
MATHJAX_STAMP := $(MATHJAX_DIR)/.mathjax-$(MATHJAX_VERSION)

PYTEST_ARGS ?=

# The environment's tools (jupyter, nbgrader, and alembic, which nbgrader runs to set up a
# gradebook) must be found on PATH by every command and subprocess, as if it were activated.
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all book test test-gpu exercises mathjax venv bench grade clean help

all: book

help:
	@echo "make book       set up .venv, regenerate exercises/, build the book into _build/html"
	@echo "make test       set up .venv and run the whole test suite"
	@echo "make test-gpu   run only the CUDA tests (needs a GPU)"
	@echo "make exercises  regenerate exercises/ from solutions/ with nbgrader"
	@echo "make bench      python -m benchmarks embedding (timing needs a GPU)"
	@echo "make grade ASSIGNMENT=ch01_embeddings SEED=<secret>   sandboxed autograding of submitted/ (as root)"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check --no-deps -e .
	touch $@

mathjax: $(MATHJAX_STAMP)

$(MATHJAX_STAMP):
	rm -rf .cache/mathjax $(MATHJAX_DIR) && mkdir -p .cache/mathjax $(MATHJAX_DIR)
	cd .cache/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	echo "$(MATHJAX_SHA256)  .cache/mathjax/mathjax-$(MATHJAX_VERSION).tgz" | sha256sum --check --quiet
	tar -xzf .cache/mathjax/mathjax-$(MATHJAX_VERSION).tgz -C .cache/mathjax
	cp -R .cache/mathjax/package/es5/. $(MATHJAX_DIR)/
	cp .cache/mathjax/package/LICENSE $(MATHJAX_DIR)/LICENSE
	touch $@

exercises: $(STAMP)
	$(PY) -m course_lib.nbgrader_tools release

# Without a GPU the chapters run their Triton kernels through Triton's CPU interpreter.
book: $(STAMP) $(MATHJAX_STAMP) exercises
	TRITON_INTERPRET=$${TRITON_INTERPRET:-$$($(PY) -c 'import torch; print(0 if torch.cuda.is_available() else 1)')} \
	  $(VENV)/bin/jupyter-book build . --builder html
	@echo
	@echo "The book is built. Open: file://$(CURDIR)/_build/html/index.html"

test: $(STAMP) $(MATHJAX_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks embedding

# Instructors: grade every submission in submitted/<student>/$(ASSIGNMENT)/ in a sandbox,
# re-check each graded function independently, write gradebook.db, feedback/ and grades/.
grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make grade ASSIGNMENT=ch01_embeddings SEED=<secret>"; exit 2; }
	$(PY) -m course_lib.autograde $(ASSIGNMENT) $(if $(SEED),--seed $(SEED)) $(GRADE_ARGS)

clean:
	rm -rf _build .cache book/_mathjax .pytest_cache
