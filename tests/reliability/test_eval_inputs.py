"""phf-eval on a model directory that is not complete: a truncated or unfinished final/ is refused.
"""

from __future__ import annotations

import re

import pytest


# -- phf-eval on an unfinished final/ -------------------------------------------------------------------------------------
def test_phf_eval_refuses_a_truncated_or_incomplete_final(run_copy):
    from phf.eval.cli import evaluate_saved

    final = run_copy / "final"
    (final / "phf_summary.json").unlink()
    with pytest.raises(SystemExit, match=rf"{re.escape(str(final))} is incomplete: no phf_summary.json.*"
                                         r"trainer.resume=auto.*allow_incomplete=true"):
        evaluate_saved({"run_dir": str(run_copy)}, [])
    data = (final / "model.safetensors").read_bytes()
    (final / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit, match=rf"corrupt or truncated checkpoint file {re.escape(str(final))}/"
                                         r"model.safetensors.*resume the training"):
        evaluate_saved({"run_dir": str(run_copy), "allow_incomplete": "true"}, [])
