#!/bin/bash
# A toy-size run of `make spa-pii-guarded`'s chain (its commands, see `make -n spa-pii-guarded`), one job at
# a time: MLE and conditional for STEPS steps on 300 documents, the SPA and oracle arms with stages of
# 6 / 8 / 8 prompts and 16 evaluation samples, then the collector. It checks that the chain runs end to
# end and times it; its numbers are no result.
#
#   OUT=/tmp/spa_smoke STEPS=400 PHF=/path/to/venv/bin bash experiments/spa_pii_guarded/smoke.sh
set -euo pipefail
OUT=${OUT:-/tmp/spa_smoke}
STEPS=${STEPS:-400}
PHF=${PHF:-.venv/bin}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS= \
  WANDB_MODE=offline WANDB_SILENT=true TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export HF_HOME=$OUT/env/hf WANDB_DIR=$OUT/env/wandb PHF_CACHE_DIR=$OUT/env/phf-cache
L=$OUT/laptop
TOY="data.source.n_docs=300 trainer.val_blocks=4 task.eval.kl.train_reference=false task.eval.capability.clean_max_docs=10 \
  task.eval.scenarios.unconditional.num_samples=16 task.eval.scenarios.unconditional_sentence_level.num_samples=8 \
  task.eval.scenarios.red_team_prompts.num_samples=4"
TOY_SPA="spa.stages.seed.num_prompts=6 spa.stages.seed.epochs=1 spa.stages.round1.num_prompts=8 \
  spa.stages.round2.num_prompts=8 spa.sampling.max_new_tokens=16 spa.prompts.max_docs=60 spa.train.batch_size=4 \
  spa.train.effective_batch_size=4"
t0=$(date +%s)
$PHF/phf-train -m +experiment=laptop_pii objective=mle,conditional seed=1 hydra.sweep.dir=$L/laptop_pii \
  trainer.max_steps=$STEPS trainer.eval_every=$STEPS trainer.checkpoint_every=0 $TOY
t1=$(date +%s)
for arm in spa_pii_guarded spa_pii_guarded_oracle; do
  $PHF/phf-spa +experiment=$arm spa.init_from=$L/laptop_pii/mle-seed1/final seed=1 \
    hydra.run.dir=$L/spa_pii_guarded/$arm-seed1 $TOY $TOY_SPA
done
t2=$(date +%s)
$PHF/python experiments/spa_pii_guarded/collect.py $L/laptop_pii $L/spa_pii_guarded $L/spa_pii_guarded \
  spa_pii_guarded spa_pii_guarded_oracle
t3=$(date +%s)
echo "wall: phf-train mle+conditional $((t1 - t0)) s; phf-spa 2 arms $((t2 - t1)) s; collect $((t3 - t2)) s; total $((t3 - t0)) s"
