#!/usr/bin/env bash
# MLE → PHF-finetune (conditional) vs MLE → SPA (seed + 2 rounds) on PEP8, CPU-sized. See README.md.
#   bash experiments/spa_pep8/run.sh [OUT]        (OUT defaults to outputs/spa_pep8)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/spa_pep8}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
# the CPU-sized model and evaluation shared by every run: conf/experiment/spa_pep8_cpu.yaml; here only the
# paths: KL(start || model) from the step-200 checkpoint every finetune starts from (drift from π_init)
PATHS="task.eval.kl.reference=$OUT/mle/checkpoints/step_00000200 task.eval.kl.cache_dir=$OUT/kl_cache"
timed() { local name=$1; shift; /usr/bin/time -f "$name wall_s=%e user_s=%U sys_s=%S maxrss_kb=%M" -a -o "$OUT/times.txt" "$@"; }

# 1. MLE pretraining: 300 steps × 8 × 64 tokens; the checkpoint at step 200 is where both finetunes start,
#    and steps 201-300 are the "MLE continued" baseline (51,200 tokens more), evaluated like the others
[ -f "$OUT/mle/final/model.safetensors" ] || timed mle $PY -m phf.train +experiment=spa_pep8_cpu objective=mle \
    $PATHS trainer.max_steps=300 trainer.lr=3e-3 trainer.checkpoint_every=200 trainer.keep_checkpoints=0 \
    trainer.log_every=10 trainer.progress=false task.eval.every_steps=0 trainer.final_eval=false hydra.run.dir="$OUT/mle"
START="$OUT/mle/checkpoints/step_00000200"
# the MLE run's final model (step 300) evaluated by phf-eval with the run's own config (spa_pep8_cpu), the
# held-out loss on the same 32 validation blocks as the others (trainer.val_blocks)
[ -f "$OUT/mle_eval/eval.json" ] || timed mle_eval .venv/bin/phf-eval run_dir="$OUT/mle" out="$OUT/mle_eval" \
    device=cpu task.eval.capability.max_blocks=32

# 2. SPA: seed (16 prompts, scorer labels = 5% of all prompts) → round 1 (128) → round 2 (176), implicit labels
[ -f "$OUT/spa/spa_summary.json" ] || timed spa $PY -m phf.spa '+experiment=[spa_pep8,spa_pep8_cpu]' $PATHS \
    spa.init_from="$START" spa.prompts.max_prompt_chars=64 spa.sampling.max_new_tokens=40 \
    spa.stages.seed.num_prompts=16 spa.stages.seed.epochs=3 spa.stages.round1.num_prompts=128 \
    spa.stages.round2.num_prompts=176 spa.train.lr=5e-4 hydra.run.dir="$OUT/spa"

# 3. conditional finetuning from the same checkpoint with SPA's trained-token budget, on the data MLE reads next
TOKENS=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['stages'][-1]['spa/cumulative/tokens_trained'])" "$OUT/spa/spa_summary.json")
echo "SPA trained on $TOKENS tokens; conditional finetuning gets the same budget"
[ -f "$OUT/conditional/final/phf_summary.json" ] || timed conditional $PY -m phf.train +experiment=spa_pep8_cpu \
    objective=conditional $PATHS model.init_from="$START" trainer.data_state_from="$START" \
    trainer.num_tokens="$TOKENS" trainer.lr=3e-3 trainer.log_every=10 trainer.progress=false \
    task.eval.every_steps=0 hydra.run.dir="$OUT/conditional"

$PY experiments/spa_pep8/summarize.py "$OUT" | tee "$OUT/summary.md"
