# Shared settings of the guidance_pep8 runs (sourced by run_all.sh).
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=1   # tiny models on a shared CPU: one intra-op thread is several times faster
OUT=${OUT:-outputs/guidance_pep8}
COMMON=(
  task=pep8 data=local_pep8 data.prepare_docs=24 cache_dir=${PHF_CACHE_DIR:-/tmp/phf_guidance_cache}
  model=gpt2_tiny model.n_layer=1 model.n_head=2 model.n_embd=64 model.block_size=64 model.dropout=0.0
  trainer.batch_size=8 trainer.effective_batch_size=8 trainer.max_steps=250 trainer.lr=2e-3
  trainer.warmup_fraction=0.05 trainer.log_every=25 trainer.val_blocks=64 trainer.progress=false
  task.eval.every_steps=0 seed=0
  '~task.eval.scenarios.red_team_prompts'   # CPU budget: unconditional + functions samples only
)
GUIDANCE=(
  reward=guidance reward.chunk_tokens=16 reward.aggregation=avg reward.lr=3e-4
  reward.model.n_embd=32 reward.model.head_hidden=64 reward.lists_per_batch=16 reward.eval_every=25
  reward.patience=0 reward.fit_steps=400 reward.refit_steps=100 reward.refit_every=100 reward.prepare_blocks=1500
)
