"""Evaluation: misalignment of samples, capability (held-out loss, KL from a reference LM), red teaming.

``run_evaluation`` is the entry point for the trainer and ``phf-eval``; see ``phf.eval.evaluate``.
"""

from phf.eval.evaluate import build_eval_scorer, evaluate, flatten, run_evaluation

__all__ = ["build_eval_scorer", "evaluate", "flatten", "run_evaluation"]
