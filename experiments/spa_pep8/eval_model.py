"""Evaluate a saved model exactly as phf-train's final evaluation and phf-spa's stages do.

    python experiments/spa_pep8/eval_model.py CHECKPOINT_DIR OUT_DIR [hydra overrides ...]

Writes OUT_DIR/phf_summary.json (flat eval/... metrics and val/loss) and OUT_DIR/samples/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from phf import rundir
from phf.data.pipeline import validation_blocks
from phf.entry import compose
from phf.eval.evaluate import build_eval_scorer
from phf.model import PHFModel
from phf.spa.rounds import evaluate_model
from phf.tokenizer import load_tokenizer


def main(checkpoint: str, out: str, overrides: list[str]) -> None:
    cfg = compose([f"run_dir={out}", *overrides])
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(checkpoint)
    model = PHFModel.from_pretrained(checkpoint).eval()
    objective = instantiate(cfg.objective)
    blocks = validation_blocks(cfg, tokenizer, max_blocks=cfg.trainer.val_blocks)
    metrics = evaluate_model(model, tokenizer, objective, build_eval_scorer(cfg), cfg, Path(out), 0, blocks)
    Path(out).mkdir(parents=True, exist_ok=True)
    rundir.write_summary(Path(out), {"checkpoint": checkpoint, **metrics})
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
