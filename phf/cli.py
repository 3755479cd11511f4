"""The console scripts (``[project.scripts]`` in pyproject.toml): light entry functions.

A console script imports its module before it runs, and ``phf.train`` imports torch and transformers
(~5 s). Hydra apps answer ``--help``, ``--cfg job`` and shell tab completion (``phf-train -sc
install=bash`` makes every Tab run ``phf-train -sc query=bash``) from the composed config alone, so
these functions load only Hydra and ``phf.entry`` and import the job's module inside the job, after
Hydra has composed the config and decided that a job runs. ``python -m phf.train`` / ``torchrun -m
phf.train`` and ``python -m phf.spa`` still work as before (``phf.train.main``, ``phf.spa.rounds.main``).

The non-Hydra commands (phf-eval, phf-data, phf-corpus-stats, phf-report) parse their own arguments; they are
listed here too so every script starts the same way, and import their module when called.
"""

from __future__ import annotations

import sys

from phf.entry import hydra_entry

SPA_EXAMPLE = "phf-spa +experiment=spa_pep8 spa.init_from=RUN/final"  # phf.spa.rounds.EXAMPLE
SPA_USAGE = f"""usage: phf-spa +experiment=NAME spa.init_from=CHECKPOINT [overrides...]

phf-spa finetunes a pretrained checkpoint with SPA rounds of DPO; it needs an SPA experiment (which
adds the `spa` config group: conf/experiment/spa_pep8.yaml, spa_pep8_scorer.yaml) and the checkpoint
it starts from (an HF directory with its tokenizer, e.g. a phf-train run's final/). For example:

    {SPA_EXAMPLE}

Hydra's own options: phf-spa --help; the docs: docs/spa.md."""


def _named(job, module: str):
    """Hydra names the job, its log file (``train.log``) and ``hydra.job.name`` after the module of the
    task function: keep the names the entry modules gave them."""
    job.__module__ = module
    return job


def train() -> None:
    """``phf-train``: ``phf.train.main`` with torch imported only once a run starts."""

    def job(cfg):
        from phf.train import job as train_job

        return train_job(cfg)

    hydra_entry(_named(job, "phf.train"))


def spa() -> None:
    """``phf-spa``: ``phf.spa.rounds.main``; with no argument at all it prints its usage."""
    if len(sys.argv) <= 1:
        print(SPA_USAGE, file=sys.stderr)
        sys.exit(2)

    def job(cfg):
        from phf.spa.rounds import run_spa

        return run_spa(cfg)

    hydra_entry(_named(job, "phf.spa.rounds"))


def evaluate() -> None:
    """``phf-eval`` (``phf.eval.cli.main``)."""
    from phf.eval.cli import main

    main()


def data() -> None:
    """``phf-data`` (``phf.data_cli.main``)."""
    from phf.data_cli import main

    main()


def corpus_stats() -> None:
    """``phf-corpus-stats`` (``phf.corpus_stats_cli.main``)."""
    from phf.corpus_stats_cli import main

    main()


def report() -> None:
    """``phf-report`` (``phf.report.main``)."""
    from phf.report import main

    main()


def score() -> None:
    """``phf-score``: ``phf.score_cli.main``, a Hydra app (``conf/score.yaml``) whose job imports the
    pipeline only once it runs."""

    def job(cfg):
        from phf.score_cli import job as score_job

        return score_job(cfg)

    hydra_entry(_named(job, "phf.score_cli"), config_name="score")


def push() -> None:
    """``phf-push``: upload a model directory to the Hugging Face Hub."""
    from phf.push import main

    main()


def import_model() -> None:
    """``phf-import``: convert an original PHF ``pytorch_model.bin`` into a phf model directory."""
    from phf.import_cli import main

    main()
