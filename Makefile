# Two commands matter: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
ROUTING_DATA_DIR ?= $(abspath ../shared/data)

export ROUTING_DATA_DIR
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: install system-deps lint typecheck test test-fast demo bench notebooks clean

install: $(VENV)/.installed

# torch is pinned to the CPU build (2.13.0) first so nothing else can pull a CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# Services and programs the tests use (headless Chromium for the report screenshot test).
system-deps:
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_redis.sh

lint: install
	$(VENV)/bin/ruff check router envs training serve tests bench
	$(VENV)/bin/mypy router envs training serve

test: install system-deps lint
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

demo: install
	$(PY) -m training demo

# Execute every tutorial and render it to HTML in out/notebooks/ (the notebooks in git stay output-free).
notebooks: install
	mkdir -p out/notebooks
	PYTHONPATH=$(CURDIR) MPLBACKEND=module://matplotlib_inline.backend_inline $(VENV)/bin/jupyter nbconvert \
		--to html --execute --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.kernel_name=python3 \
		--output-dir out/notebooks notebooks/*.ipynb

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
