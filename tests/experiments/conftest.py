"""Helpers for the experiment tests: compose with Hydra's runtime set, as ``phf-train`` would."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import CONF, ROOT

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER = [f"{t}_{p}" for t in ("toxicity", "pii", "pep8") for p in ("pretrain", "finetune")]
DEMOS = ["demo", "demo_sweep"]
OBJECTIVES = ["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]


def compose_run(overrides: list[str]):
    """Compose like ``phf-train`` does: HydraConfig is set, so ``${hydra:runtime.choices.*}`` resolves.

    Returns the config without its ``hydra`` node.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from phf.entry import compose

    cfg = compose(overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_phf_train(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m phf.train ARGS`` in a subprocess, offline, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "phf.train", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
