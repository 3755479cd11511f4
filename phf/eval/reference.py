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
first trains, the others wait and reuse it. The training runs phf-train's ``train`` in a child process
(``_TRAIN``), so the evaluating run's RNG and torch state are untouched. Its cost is one MLE run without evaluation (measured in
docs/evaluation.md). Prebuild it before a parallel sweep with ``python -m phf.eval.reference
+experiment=laptop task=... data=...`` so that no job waits idle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from phf.data.document import Document
from phf.data.pipeline import build_data, in_validation
from phf.data.sources import Source, is_placeholder
from phf.rundir import final_dir, read_summary

log = logging.getLogger(__name__)

FORMAT = 1
#: trainer keys that do not change the reference's weights: left out of its cache key
_UNWEIGHTED = ("progress", "progress_every_s", "log_every", "resume", "resume_mismatch", "resume_keys",
               "resume_ignore", "dry_run", "eval_probe_tokens", "keep_checkpoints")


class CleanSource(Source):
    """Row i of an injected corpus's clean version, or an empty placeholder (skipped by the pipeline)
    where the injected row i is held out (``val_fraction``) or is itself a placeholder. A config node
    (``_target_: phf.eval.reference.CleanSource``, ``injected``: the injected source's config)."""

    def __init__(self, injected: Source, val_fraction: float):
        if not callable(getattr(injected, "clean_documents", None)):
            raise ValueError(f"{type(injected).__name__} has no clean version (clean_documents()); train the "
                             "reference on the corpus as it is")
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


def has_clean_version(cfg) -> bool:
    """Whether the run's corpus keeps a clean version (``source.clean_documents()``)."""
    return callable(getattr(build_data(cfg.data).source, "clean_documents", None))


def reference_config(cfg, steps: int | None, seed: int, clean: bool) -> DictConfig:
    """The reference's run config: ``cfg`` resolved (the tokenizer stays fitted to the run's corpus), its
    source the clean version (``clean``), objective MLE, no reward wrapper, ``steps`` optimizer steps
    (None: the run's trainer.max_steps / num_tokens), seed ``seed``; no evaluation, checkpoint, resume or
    tracker."""
    ref = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if clean:
        # the module's import name (``__spec__``), not ``__name__``: under ``python -m phf.eval.reference`` that
        # is ``__main__``, which the reference's process cannot import and which would change the cache key
        ref.data.source = {"_target_": f"{__spec__.name}.CleanSource", "injected": ref.data.source,
                           "val_fraction": ref.data.val_fraction}
    ref.objective = {"_target_": "phf.objectives.MLE"}
    ref.reward = None
    ref.seed = seed
    ref.logger = {"_target_": "phf.tracking.Tracker", "backend": "none"}
    if steps is not None:
        ref.trainer.max_steps = steps
        ref.trainer.num_tokens = None
    for key, value in {"final_eval": False, "eval_every": 0, "checkpoint_every": 0, "resume": "never",
                       "progress": False, "dry_run": False}.items():
        ref.trainer[key] = value
    ref.task.eval.kl.train_reference = False
    return ref


def reference_key(ref: DictConfig) -> str:
    """A hash of what the reference's weights depend on."""
    trainer = {k: v for k, v in OmegaConf.to_container(ref.trainer).items() if k not in _UNWEIGHTED}
    parts = {"format": FORMAT, "seed": ref.seed, "trainer": trainer,
             **{k: OmegaConf.to_container(ref[k]) for k in ("data", "tokenizer", "model")},
             "segmenter": OmegaConf.to_container(ref.task.segmenter)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_root(cfg) -> Path:
    from phf.data.corpora.prose import default_cache_dir

    root = OmegaConf.select(cfg, "cache_dir")
    return Path(root).expanduser() if root else default_cache_dir()


def clean_reference(cfg, kl) -> Path:
    """The reference's ``final/`` directory for the run config ``cfg`` with its KL settings ``kl``
    (``task.eval.kl``, typed: ``phf.eval.settings.KL``), trained now if not cached.

    Takes the whole config: the reference's training config is the run's, changed (``reference_config``),
    and its cache key is a hash of that config (``reference_key``)."""
    clean = has_clean_version(cfg)
    ref = reference_config(cfg, kl.reference_steps, kl.reference_seed, clean)
    directory = cache_root(cfg) / "reference" / f"{ref.task.name}-{reference_key(ref)}"
    if (directory / "reference.json").is_file():
        return final_dir(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (directory / "reference.json").is_file():  # another job trained it while this one waited
                return final_dir(directory)
            if directory.exists():  # a damaged build (no reference.json): start over
                shutil.rmtree(directory)
            _train(ref, clean, directory)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final_dir(directory)


#: what the reference's training process runs: phf-train's ``train`` on the config file argv[1], with the
#: caller's torch thread count argv[2]. A separate process: the caller's RNG, torch and logging state stay
#: untouched, and the evaluation does not import the trainer that imports it
_TRAIN = """
import logging, sys
import torch
from omegaconf import OmegaConf
from phf.train import train
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
torch.set_num_threads(int(sys.argv[2]))
train(OmegaConf.load(sys.argv[1]))
"""


_TORCHRUN_ENV = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
                 "MASTER_ADDR", "MASTER_PORT"}


def _train(ref: DictConfig, clean: bool, directory: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    ref.run_dir = str(tmp / "run")
    config = tmp / "reference_config.yaml"
    OmegaConf.save(ref, config)
    log.info("training the KL reference (MLE on the %s; once, cached in %s)",
             "clean documents" if clean else "corpus as it is", directory)
    t0 = time.perf_counter()
    # one process, never a rank of the caller's torchrun job (prebuild it before a distributed run: its other
    # ranks wait for rank 0's evaluation meanwhile)
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_ENV and not k.startswith("TORCHELASTIC_")}
    done = subprocess.run([sys.executable, "-c", _TRAIN, str(config), str(torch.get_num_threads())], check=False,
                          env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"training the KL reference failed (exit code {done.returncode}; its log is above, its "
                           f"config in {config}); set task.eval.kl.train_reference=false to evaluate without KL")
    summary = read_summary(final_dir(tmp / "run"))
    os.replace(final_dir(tmp / "run"), final_dir(tmp))
    shutil.rmtree(tmp / "run")
    info = {"format": FORMAT, "clean": clean, "seconds": seconds, "steps": summary.get("step"),
            "tokens_seen": summary.get("tokens_seen"), "val_loss": summary.get("val/loss")}
    (tmp / "reference.json").write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, directory)
    log.info("KL reference trained in %.0f s (validation loss %s): %s", seconds, info["val_loss"], final_dir(directory))


def main(argv: list[str] | None = None) -> None:
    """``python -m phf.eval.reference <phf-train overrides>``: build the reference a run would use."""
    from phf.entry import compose

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from phf.eval.settings import Evaluation

    cfg = compose(list(sys.argv[1:] if argv is None else argv) + ["run_dir=."], prog="python -m phf.eval.reference")
    print(clean_reference(cfg, Evaluation.from_config(cfg).kl))


if __name__ == "__main__":
    main()
