"""The offline KL reference: MLE on the corpus's clean documents, trained once and cached.

The paper's capability axis is KL(GPT-3 || model) on GPT-3 samples (``phf.eval.kl``). Offline there is
no GPT-3, and a laptop run has no other model to compare with, so phf trains its own reference when
``task.eval.kl.train_reference`` is on (the laptop and demo settings) and ``task.eval.kl.reference`` is
null: the run's model architecture, tokenizer and trainer settings, objective MLE, trained on

* an injected corpus's *clean* documents (``source.clean_documents()``: the prose before injection),
  less the documents whose injected version is held out (they stay unseen by every model, the
  reference included); the same documents at the same positions, so ``trainer.max_steps`` means the
  same amount of text;
* for a corpus without a clean version (JSONL, HF, the standard library's code), the corpus as it is:
  the paper's GPT-3 was also trained on unfiltered web text.

So KL(reference || model) asks how much of "what plain MLE on clean text learns in the same budget" a
model still covers; it does not reward or punish a model for writing the misaligned text the reference
never saw. The reference shares the runs' tokenizer (fitted to the run's corpus, not to the clean one;
it has no control tokens: a conditional model's control tokens are context, renormalised away).

It is trained once per (corpus, tokenizer, model, trainer settings, steps, reference seed), whatever
the run's objective and seed, and cached under ``<cache_dir>/reference/<task>-<hash>/`` (``final/``,
the HF checkpoint, and ``reference.json``). Concurrent jobs of a sweep serialise on a lock file: the
first trains, the others wait and reuse it. Its cost is one MLE run without evaluation (measured in
docs/evaluation.md). Prebuild it before a parallel sweep with ``python -m phf.eval.reference
+experiment=laptop task=... data=...`` so that no job waits idle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from phf.data.document import Document
from phf.data.pipeline import build_data, in_validation
from phf.data.sources import Source, is_placeholder

log = logging.getLogger(__name__)

FORMAT = 1
#: trainer keys that do not change the reference's weights: left out of its cache key
_UNWEIGHTED = ("progress", "progress_every_s", "log_every", "resume", "resume_mismatch", "resume_keys",
               "resume_ignore", "dry_run", "eval_probe_tokens", "keep_checkpoints")


class CleanSource(Source):
    """Row i of an injected corpus's clean version, or an empty placeholder (skipped by the pipeline)
    where the injected row i is held out (``val_fraction``) or is itself a placeholder."""

    def __init__(self, injected: Source, val_fraction: float):
        self.injected, self.val_fraction = injected, val_fraction
        self.clean = injected.clean_documents()

    def iter_from(self, start: int) -> Iterator[Document]:
        for i, doc in enumerate(self.injected.iter_from(start), start):
            if is_placeholder(doc) or in_validation(doc, self.val_fraction):
                yield Document([], None, id=doc.id)
            else:
                c = self.clean[i]
                yield Document(list(c.texts), None, id=c.id, meta=dict(c.meta))

    def __len__(self) -> int:
        return len(self.clean)


def reference_config(cfg, steps: int | None, seed: int) -> DictConfig:
    """The reference's run config: ``cfg`` resolved (the tokenizer stays fitted to the run's corpus),
    objective MLE, no reward wrapper, ``steps`` optimizer steps (None: the run's), seed ``seed``, no
    evaluation, checkpoint or resume, no tracker."""
    from phf.trainer import Trainer

    ref = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run_steps = Trainer.from_config(ref.trainer).plan(ref.model.block_size, 1).max_steps
    ref.objective = {"_target_": "phf.objectives.MLE"}
    ref.reward = None
    ref.seed = seed
    ref.logger = {"_target_": "phf.tracking.Tracker", "backend": "none"}
    ref.trainer.max_steps = steps if steps is not None else run_steps
    ref.trainer.num_tokens = None
    for key, value in {"final_eval": False, "eval_every": 0, "checkpoint_every": 0, "resume": "never",
                       "progress": False, "dry_run": False}.items():
        ref.trainer[key] = value
    ref.task.eval.kl.train_reference = False
    return ref


def reference_key(ref: DictConfig, clean: bool) -> str:
    """A hash of what the reference's weights depend on."""
    trainer = {k: v for k, v in OmegaConf.to_container(ref.trainer).items() if k not in _UNWEIGHTED}
    parts = {"format": FORMAT, "clean": clean, "seed": ref.seed, "trainer": trainer,
             **{k: OmegaConf.to_container(ref[k]) for k in ("data", "tokenizer", "model")},
             "segmenter": OmegaConf.to_container(ref.task.segmenter)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_root(cfg) -> Path:
    from phf.data.corpora.prose import default_cache_dir

    root = OmegaConf.select(cfg, "cache_dir")
    return Path(root).expanduser() if root else default_cache_dir()


def clean_reference(cfg) -> Path:
    """The reference's ``final/`` directory for the run config ``cfg``, trained now if not cached."""
    from phf.eval.settings import Evaluation

    kl = Evaluation.from_config(cfg).kl
    ref = reference_config(cfg, kl.reference_steps, kl.reference_seed)
    data = build_data(ref.data)
    clean = callable(getattr(data.source, "clean_documents", None))
    directory = cache_root(cfg) / "reference" / f"{ref.task.name}-{reference_key(ref, clean)}"
    if (directory / "reference.json").is_file():
        return directory / "final"
    directory.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (directory / "reference.json").is_file():  # another job trained it while this one waited
                return directory / "final"
            if directory.exists():  # a damaged build (no reference.json): start over
                shutil.rmtree(directory)
            _train(ref, data, clean, directory)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return directory / "final"


def _train(ref: DictConfig, data, clean: bool, directory: Path) -> None:
    from phf.train import train

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        raise RuntimeError(f"the KL reference {directory.name} is not trained inside a distributed run; prebuild "
                           "it with `python -m phf.eval.reference <the run's overrides>` first")
    source = CleanSource(data.source, data.val_fraction) if clean else None
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    ref.run_dir = str(tmp / "run")
    log.info("training the KL reference (MLE on the %s, %d steps; once, cached in %s)",
             "clean documents" if clean else "corpus as it is", ref.trainer.max_steps, directory)
    t0 = time.perf_counter()
    with _kept_rng():
        metrics = train(ref, source=source)
    seconds = time.perf_counter() - t0
    os.replace(tmp / "run" / "final", tmp / "final")
    shutil.rmtree(tmp / "run")
    info = {"format": FORMAT, "clean": clean, "seconds": seconds, "steps": int(ref.trainer.max_steps),
            "val_loss": metrics.get("val/loss"), "config": OmegaConf.to_container(ref)}
    (tmp / "reference.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, directory)
    log.info("KL reference trained in %.0f s (validation loss %.4g): %s", seconds, info["val_loss"] or float("nan"),
             directory / "final")


@contextlib.contextmanager
def _kept_rng():
    """The caller's Python and torch RNG states are restored after the reference's training seeds them."""
    state = random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(state)


def main(argv: list[str] | None = None) -> None:
    """``python -m phf.eval.reference <phf-train overrides>``: build the reference a run would use."""
    import sys

    from hydra import compose, initialize_config_dir

    from phf.runtime import conf_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(sys.argv[1:] if argv is None else argv) + ["run_dir=."])
    print(clean_reference(cfg))


if __name__ == "__main__":
    main()
