# phf — `make help` lists the targets. Everything runs offline on CPU unless a target says otherwise.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU torch by default; GPU users: make install TORCH_SPEC="torch==2.13.0 --index-url <their CUDA index>"
# (torch must stay in the same pip command as detoxify, or pip resolves a multi-GB CUDA build).
TORCH_SPEC ?= torch==2.13.0
# exact dependency versions (constraints.txt: why); CONSTRAINTS= installs the newest versions pyproject.toml allows
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS= \
	WANDB_MODE=offline WANDB_SILENT=true TOKENIZERS_PARALLELISM=false
# temp dirs for the HF and wandb caches, so tests never touch a user's caches
TMPENV = tmp=$$(mktemp -d) && export HF_HOME=$$tmp/hf WANDB_DIR=$$tmp/wandb PHF_CACHE_DIR=$$tmp/phf-cache
DEMO_DIR ?= outputs/demo
# the demo's evaluations during training (every N optimizer steps of 1,500, besides the final one), so that its
# curves have more than one point; only `make demo` sets it (conf/experiment/demo.yaml, which other experiments
# inherit, keeps task.eval.every_steps=0); DEMO_EVAL_EVERY=0 evaluates at the end only
DEMO_EVAL_EVERY ?= 750
SWEEP_DIR ?= outputs/demo_sweep
LAPTOP_DIR ?= outputs/laptop
PAPER_DIR ?= runs/paper
OBJECTIVES := mle,filtering,conditional,unlikelihood,rwr,awr
# the laptop suite's headline comparison gets 5 seeds (issue 24, item 6), the other three objectives SEEDS
HEADLINE_OBJECTIVES := mle,filtering,conditional
OTHER_OBJECTIVES := unlikelihood,rwr,awr
HEADLINE_SEEDS ?= 1,2,3,4,5
FINETUNE_OBJECTIVES ?= conditional,unlikelihood
comma := ,
SEEDS ?= 1,2
# where a sweep's jobs go: LAUNCHER="hydra/launcher=slurm_gpu hydra.launcher.partition=gpu"; any override: HYDRA_ARGS="..."
LAUNCHER ?=
HYDRA_ARGS ?=
# two single-threaded jobs at a time beat one two-threaded job on 2 cores (docs/training.md, Launchers)
CPU_PAIR := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# the structure sweep (issue 24, item 4; experiments/structure_sweep/README.md): its points (conf/structure/),
# objectives and seeds (SEEDS when given on the command line or in the environment, else 1,2,3), and the
# drop-fraction lever at one point (0.01, the task's default, is in the main grid)
STRUCTURE_DIR ?= outputs/structure_sweep
STRUCTURE_POINTS ?= s0,s1,s2,s3,s4,s5
STRUCTURE_OBJECTIVES ?= mle,filtering,conditional
STRUCTURE_SEEDS = $(if $(filter command line environment,$(origin SEEDS)),$(SEEDS),1$(comma)2$(comma)3)
DROP_POINT ?= s4
DROP_FRACTIONS ?= 0.1
CONTEXT_SEEDS ?= 1,2,3
# SPA that does not collapse (issue 30; experiments/spa_pii_guarded/README.md): arms (conf/experiment/ names),
# seeds (MLE and conditional are trained for any seed that lacks them), extra phf-spa overrides
SPA_GUARDED_DIR ?= $(LAPTOP_DIR)/spa_pii_guarded
SPA_ARMS ?= spa_pii_guarded,spa_pii_guarded_oracle,spa_pii_guarded_hybrid
SPA_SEEDS ?= 1,2,3
SPA_ARGS ?=

.PHONY: help install test test-slow test-gpu test-all demo demo-sweep laptop-toxicity laptop-pii laptop-pep8 repro-toxicity repro-pii repro-pep8 \
	laptop-pii-finetune laptop-pii-seeds spa-pii-guarded constraints structure-sweep structure-drop structure-context structure-collect finetune-toxicity finetune-pii finetune-pep8 report bench lint clean

help: ## show this help (coloured on a terminal only)
	@if [ -t 1 ]; then on=$$(printf '\033[36m'); off=$$(printf '\033[0m'); else on=; off=; fi; \
	grep -E '^[a-zA-Z0-9_% -]+:.*?## ' $(MAKEFILE_LIST) | \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-14s%s %s\n", on, $$1, off, $$2}'

install: $(VENV)/.installed ## create .venv with phf (editable), its dependencies and dev tools

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip $(PIN)
	$(VENV)/bin/pip install --quiet $(TORCH_SPEC) -e ".[dev,launchers,lmeval]" $(PIN)
	touch $@

constraints: install ## rewrite constraints.txt from the installed environment (after a pyproject.toml change: make install CONSTRAINTS= first)
	@{ sed -n '/^#/p' constraints.txt; $(VENV)/bin/pip freeze --all --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton)[=-]'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

test: install ## fast test suite, offline (slow and GPU tests excluded)
	$(TMPENV) && $(OFFLINE) $(PY) -m pytest -q

test-slow: install ## slow tests only (kill-and-resume at random steps, sweeps)
	$(TMPENV) && $(OFFLINE) $(PY) -m pytest -q -m slow

test-gpu: install ## CUDA-only tests (bf16 loop, torch.compile); skipped without a GPU
	$(TMPENV) && $(OFFLINE) $(PY) -m pytest -q -m gpu

test-all: install ## every CPU test
	$(TMPENV) && $(OFFLINE) $(PY) -m pytest -q -m "not gpu"

demo: install ## offline CPU, < 10 min: PII on local_pii, fitted BPE, MLE vs conditional training, then the report
	@# the KL reference (MLE on the clean corpus, cached) trains beside the two runs, so neither waits for it
	$(OFFLINE) $(CPU_PAIR) $(PY) -m phf.eval.reference +experiment=demo $(HYDRA_ARGS) & ref=$$!; \
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=demo objective=mle,conditional \
		task.eval.every_steps=$(DEMO_EVAL_EVERY) \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(DEMO_DIR) $(HYDRA_ARGS); status=$$?; \
	wait $$ref && exit $$status
	$(PY) -m phf.report $(DEMO_DIR) && cat $(DEMO_DIR)/report.md
	@echo "models: $(DEMO_DIR)/{mle,conditional}/final (load with AutoModelForCausalLM.from_pretrained)"

demo-sweep: install ## offline CPU, < 1 h on 2 cores: six objectives x 2 seeds on the demo's task, then phf-report
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=demo_sweep objective=$(OBJECTIVES) seed=$(SEEDS) \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(SWEEP_DIR) $(HYDRA_ARGS)
	$(PY) -m phf.report $(SWEEP_DIR) && cat $(SWEEP_DIR)/report.md

laptop-toxicity laptop-pii laptop-pep8: laptop-%: install ## laptop-{toxicity,pii,pep8}: MLE/filtering/conditional x 5 seeds, the other three x 2, task's local corpus, offline CPU
	@# headline objectives first (HEADLINE_SEEDS), then the rest (SEEDS); finished runs are skipped on a rerun.
	@# The KL reference (MLE on the clean corpus, cached) trains beside the first pair, so no job waits for it.
	$(OFFLINE) $(CPU_PAIR) $(PY) -m phf.eval.reference +experiment=laptop_$* $(HYDRA_ARGS) & ref=$$!; \
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=laptop_$* objective=$(HEADLINE_OBJECTIVES) seed=$(HEADLINE_SEEDS) \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(LAPTOP_DIR)/laptop_$* $(HYDRA_ARGS); status=$$?; \
	wait $$ref && exit $$status
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=laptop_$* objective=$(OTHER_OBJECTIVES) seed=$(SEEDS) \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(LAPTOP_DIR)/laptop_$* $(HYDRA_ARGS)
	$(PY) -m phf.report $(LAPTOP_DIR)/laptop_$* && cat $(LAPTOP_DIR)/laptop_$*/report.md

laptop-pii-finetune: install ## after laptop-pii: MLE's step-750 checkpoint + 750 steps of conditional / unlikelihood (paper Fig. 5)
	@for s in $(subst $(comma), ,$(SEEDS)); do ckpt=$(LAPTOP_DIR)/laptop_pii/mle-seed$$s/checkpoints/step_00000750; \
	if [ ! -d "$$ckpt" ]; then echo "no $$ckpt: run make laptop-pii first" >&2; exit 1; fi; done
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=laptop_pii_finetune objective=$(FINETUNE_OBJECTIVES) seed=$(SEEDS) \
		'laptop.finetune_from=$(LAPTOP_DIR)/laptop_pii/mle-seed$${seed}/checkpoints/step_00000750' \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(LAPTOP_DIR)/laptop_pii_finetune $(HYDRA_ARGS)
	$(PY) -m phf.report $(LAPTOP_DIR)/laptop_pii_finetune
	@# misalignment at the checkpoints: from scratch (375/750/1125 steps) and finetuned (its step 375)
	@set -e; E=$(LAPTOP_DIR)/laptop_pii_fig5_evals; for o in mle $(subst $(comma), ,$(FINETUNE_OBJECTIVES)); do \
	for s in $(subst $(comma), ,$(SEEDS)); do \
	for k in 00000375 00000750 00001125; do \
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-eval checkpoint=$(LAPTOP_DIR)/laptop_pii/$$o-seed$$s/checkpoints/step_$$k \
		skip=heldout,kl,red_team out=$$E/$$o-seed$$s/step_$$k; done; \
	if [ $$o != mle ]; then $(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-eval \
		checkpoint=$(LAPTOP_DIR)/laptop_pii_finetune/$$o-seed$$s/checkpoints/step_00000375 \
		skip=heldout,kl,red_team out=$$E/ft-$$o-seed$$s/step_00000375; fi; done; done; \
	for o in $(subst $(comma), ,$(FINETUNE_OBJECTIVES)); do $(PY) experiments/laptop_pii/fig5_collect.py \
		$(LAPTOP_DIR)/laptop_pii $(LAPTOP_DIR)/laptop_pii_finetune $$E $(LAPTOP_DIR)/laptop_pii_fig5/$$o $$o; done

laptop-pii-seeds: install ## after laptop-pii: guidance (guided_mle, rwr, awr with reward=guidance) and SPA from MLE, one table
	@for s in $(subst $(comma), ,$(SEEDS)); do m=$(LAPTOP_DIR)/laptop_pii/mle-seed$$s/final; \
	if [ ! -d "$$m" ]; then echo "no $$m: run make laptop-pii first" >&2; exit 1; fi; done
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=laptop_pii reward=guidance objective=guided_mle,rwr,awr \
		seed=$(SEEDS) hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(LAPTOP_DIR)/laptop_pii_guidance $(HYDRA_ARGS)
	@set -e; pids=; for s in $(subst $(comma), ,$(SEEDS)); do \
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-spa +experiment=spa_pii spa.init_from=$(LAPTOP_DIR)/laptop_pii/mle-seed$$s/final \
		seed=$$s hydra.run.dir=$(LAPTOP_DIR)/spa_pii/seed$$s & pids="$$pids $$!"; done; for p in $$pids; do wait $$p; done
	$(PY) experiments/laptop_pii/seed_methods_collect.py $(LAPTOP_DIR)/laptop_pii $(LAPTOP_DIR)/laptop_pii_guidance \
		$(LAPTOP_DIR)/spa_pii $(LAPTOP_DIR)/laptop_pii_seed_methods

spa-pii-guarded: install ## issue 30 (not yet run): SPA with guards vs oracle/hybrid arms from MLE, seeds 1-3, beside MLE and conditional
	@# MLE (SPA's start) and conditional for every seed; finished runs are skipped, so after `make laptop-pii` only seed 3 trains
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=laptop_pii objective=mle,conditional seed=$(SPA_SEEDS) \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(LAPTOP_DIR)/laptop_pii $(HYDRA_ARGS)
	@# every (arm, seed) SPA run, two at a time; a rerun skips finished stages
	printf '%s\n' $(foreach a,$(subst $(comma), ,$(SPA_ARMS)),$(foreach s,$(subst $(comma), ,$(SPA_SEEDS)),\
		"$(VENV)/bin/phf-spa +experiment=$(a) spa.init_from=$(LAPTOP_DIR)/laptop_pii/mle-seed$(s)/final seed=$(s) \
		hydra.run.dir=$(SPA_GUARDED_DIR)/$(a)-seed$(s) $(SPA_ARGS)")) | $(OFFLINE) $(CPU_PAIR) xargs -P 2 -I{} sh -c '{}'
	$(PY) experiments/spa_pii_guarded/collect.py $(LAPTOP_DIR)/laptop_pii $(SPA_GUARDED_DIR) $(SPA_GUARDED_DIR) \
		$(subst $(comma), ,$(SPA_ARMS))

structure-sweep: install ## issue 24(4): 5 corpus structures x mle/filtering/conditional x 3 seeds (estimate: 2-2.5 h on 2 idle cores), corpus statistic, collector
	@# the clean KL reference of each point (one per corpus), two at a time, so that no job of the grid waits for one
	printf '%s\n' $(subst $(comma), ,$(STRUCTURE_POINTS)) | $(OFFLINE) $(CPU_PAIR) xargs -P 2 -I{} \
		$(PY) -m phf.eval.reference +experiment=structure_sweep structure={} $(HYDRA_ARGS)
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=structure_sweep structure=$(STRUCTURE_POINTS) \
		objective=$(STRUCTURE_OBJECTIVES) seed=$(STRUCTURE_SEEDS) \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(STRUCTURE_DIR)/runs $(HYDRA_ARGS)
	$(MAKE) structure-collect

structure-drop: install ## after structure-sweep: conditional at drop_token_fraction DROP_FRACTIONS (0.1) on DROP_POINT (s4), 3 seeds (estimate: 10-15 min)
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=structure_sweep structure=$(DROP_POINT) objective=conditional \
		seed=$(STRUCTURE_SEEDS) task.objectives.conditional.drop_token_fraction=$(DROP_FRACTIONS) \
		'hydra.sweep.subdir=$${hydra:runtime.choices.structure}-conditional-drop$${task.objectives.conditional.drop_token_fraction}-seed$${seed}' \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(STRUCTURE_DIR)/drop $(HYDRA_ARGS)
	$(MAKE) structure-collect

structure-context: install ## after laptop-pii: the demo's corpus with a 512-token context (same tokens per step), MLE and conditional x seeds 1-3
	$(OFFLINE) $(CPU_PAIR) $(PY) -m phf.eval.reference +experiment=laptop_pii_context $(HYDRA_ARGS)
	$(OFFLINE) $(CPU_PAIR) $(VENV)/bin/phf-train -m +experiment=laptop_pii_context objective=mle,conditional seed=$(CONTEXT_SEEDS) \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(LAPTOP_DIR)/laptop_pii_context $(HYDRA_ARGS)
	$(PY) experiments/structure_sweep/context_collect.py $(LAPTOP_DIR)/laptop_pii $(LAPTOP_DIR)/laptop_pii_context

structure-collect: install ## the structure sweep's corpus statistic per point (cached after the first), CSV and plot
	@mkdir -p $(STRUCTURE_DIR)/corpus_stats
	printf '%s\n' $(subst $(comma), ,$(STRUCTURE_POINTS)) | $(OFFLINE) $(CPU_PAIR) xargs -P 2 -I{} sh -c \
		'test -s $(STRUCTURE_DIR)/corpus_stats/{}.json || $(PY) -m phf.corpus_stats_cli +experiment=structure_sweep \
		structure={} $(HYDRA_ARGS) out=$(STRUCTURE_DIR)/corpus_stats/{}.json > $(STRUCTURE_DIR)/corpus_stats/{}.log'
	$(PY) experiments/structure_sweep/collect.py $(STRUCTURE_DIR)

repro-toxicity repro-pii repro-pep8: repro-%: install ## repro-{toxicity,pii,pep8}: the paper's pretraining sweep (GPU, network; see docs/paper.md)
	$(VENV)/bin/phf-train -m +experiment=$*_pretrain objective=$(OBJECTIVES) \
		hydra.sweep.dir=$(PAPER_DIR)/$*_pretrain $(LAUNCHER) $(HYDRA_ARGS)

finetune-toxicity finetune-pii finetune-pep8: finetune-%: install ## finetune-{toxicity,pii,pep8}: the paper's finetuning from repro-<task>'s MLE halfway checkpoint
	@ckpt=$$(ls -d $(PAPER_DIR)/$*_pretrain/*mle/checkpoints/step_* 2>/dev/null | head -n 1); \
	if [ -z "$$ckpt" ]; then echo "no MLE checkpoint under $(PAPER_DIR)/$*_pretrain/*mle/checkpoints: run make repro-$* first" >&2; exit 1; fi; \
	$(VENV)/bin/phf-train -m +experiment=$*_finetune objective=$(OBJECTIVES) paper.finetune_from=$$ckpt \
		hydra.sweep.dir=$(PAPER_DIR)/$*_finetune $(LAUNCHER) $(HYDRA_ARGS)

report: install ## phf-report over every sweep under runs/paper/
	$(PY) -m phf.report $(PAPER_DIR)/*_pretrain $(PAPER_DIR)/*_finetune --out $(PAPER_DIR)

bench: install ## CPU benchmarks (< 15 min): phf vs the original's HF Trainer engine, scaling, levers
	$(OFFLINE) $(PY) experiments/benchmarks/run_all.py $(BENCH_ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check phf tests

clean: ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
