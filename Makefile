# LLM Foundations. The two commands a newcomer needs:
#   make lab    set up (first time only) and start JupyterLab on notebooks/
#   make test   set up (first time only) and run the whole test suite
# Everything is installed into .venv with the pins in constraints.txt (torch 2.13.0, CPU build).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PATH := $(abspath $(BIN)):$(PATH)
LAB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help setup lab test test-fast release validate autograde feedback grades progress bench models wheel system-deps clean-venv

help:
	@echo "make lab        set up if needed, then start JupyterLab on notebooks/"
	@echo "make test       set up if needed, then run the whole test suite"
	@echo "make release    regenerate notebooks/ from solutions/ (course release)"
	@echo "make validate NB=path.ipynb   which checks of one notebook fail (course validate)"
	@echo "make autograde DIR=submissions   grade a folder of submissions (course autograde)"
	@echo "make feedback / make grades      feedback HTML / grades CSV"
	@echo "make bench      timings and memory -> benchmarks/results.md"
	@echo "make models     re-train the bundled tiny models (about 10 min on 2 cores)"
	@echo "make wheel      build the installable package (dist/llm_foundations-*.whl: models, decks, student notebooks)"

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[dev,cluster]'
	@touch $@

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(LAB_ARGS)

# Browser tests need Chromium and grading isolation needs bubblewrap: installed when we can (root + apt-get),
# skipped by the tests with a clear reason otherwise.
system-deps:
	@bash tools/install-system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

release: $(STAMP)
	$(BIN)/course release

validate: $(STAMP)
	$(BIN)/course validate $(NB)

autograde: $(STAMP)
	$(BIN)/course autograde $(DIR)

feedback: $(STAMP)
	$(BIN)/course feedback

grades: $(STAMP)
	$(BIN)/course grades

progress: $(STAMP)
	$(BIN)/course progress

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

models: $(STAMP)
	$(BIN)/python -m course_utils.train

# The learner's package: pip install dist/llm_foundations-*.whl, then `course start`. Carries the student release
# (notebooks/), never solutions/ (setup.py refuses a release that leaks one).
wheel: $(STAMP)
	rm -rf build dist/llm_foundations-*.whl
	$(BIN)/python -m pip wheel --no-deps --wheel-dir dist .

clean-venv:
	rm -rf $(VENV)
