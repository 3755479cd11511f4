# phf — `make help` lists the targets. Everything runs offline on CPU unless a target says otherwise.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU torch by default; GPU users: make install TORCH_SPEC="torch==2.13.0 --index-url <their CUDA index>"
# (torch must stay in the same pip command as detoxify, or pip resolves a multi-GB CUDA build).
TORCH_SPEC ?= torch==2.13.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS= \
	WANDB_MODE=offline WANDB_SILENT=true TOKENIZERS_PARALLELISM=false
# temp dirs for the HF and wandb caches, so tests never touch a user's caches
TMPENV = tmp=$$(mktemp -d) && export HF_HOME=$$tmp/hf WANDB_DIR=$$tmp/wandb PHF_CACHE_DIR=$$tmp/phf-cache
DEMO_DIR ?= outputs/demo

.PHONY: help install test test-slow test-all demo lint clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv with phf (editable), its dependencies and dev tools

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH_SPEC) -e ".[dev,launchers]"
	touch $@

test: install ## fast test suite, offline (slow and GPU tests excluded)
	$(TMPENV) && $(OFFLINE) $(PY) -m pytest -q

test-slow: install ## slow tests only (kill-and-resume at random steps, sweeps)
	$(TMPENV) && $(OFFLINE) $(PY) -m pytest -q -m slow

test-all: install ## every CPU test
	$(TMPENV) && $(OFFLINE) $(PY) -m pytest -q -m "not gpu"

demo: install ## train gpt2_tiny with MLE on local_pep8 (the stdlib) on CPU in a few minutes
	$(OFFLINE) $(VENV)/bin/phf-train task=pep8 data=local_pep8 model=gpt2_tiny objective=mle \
		trainer.max_steps=150 trainer.lr=2e-3 trainer.eval_every=50 trainer.log_every=10 \
		hydra.run.dir=$(DEMO_DIR)/mle
	@echo "model: $(DEMO_DIR)/mle/final (load with AutoModelForCausalLM.from_pretrained)"

lint: install ## ruff
	$(VENV)/bin/ruff check phf tests

clean: ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
