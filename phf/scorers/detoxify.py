"""Toxicity misalignment: the Detoxify ``toxicity`` probability (the paper's toxicity scorer, §4.1).

The paper scored its training data with Detoxify ``original`` (BERT-base, Jigsaw 2018) and its
samples with ``unbiased`` (RoBERTa-base). Detoxify's weights are GitHub release downloads, so offline
use needs a local ``checkpoint`` file (and, for the released checkpoints, the Hugging Face config and
tokenizer of their base model in the local HF cache or at ``huggingface_config_path``).

**Security:** Detoxify checkpoints are Python pickles, loaded with ``torch.load(weights_only=False)``:
loading one can execute arbitrary code. Only load checkpoint files you trust.
"""

from __future__ import annotations

import hashlib
import os
import stat
from importlib.metadata import version as _dist_version
from pathlib import Path

from phf.scorers.base import Scorer
from phf.scorers.errors import call_batched

#: Detoxify's release file name per model type (from detoxify's own MODEL_URLS).
RELEASE_URLS = {
    "original": "https://github.com/unitaryai/detoxify/releases/download/v0.1-alpha/toxic_original-c1212f89.ckpt",
    "unbiased": "https://github.com/unitaryai/detoxify/releases/download/v0.3-alpha/toxic_debiased-c7548aa0.ckpt",
    "multilingual": "https://github.com/unitaryai/detoxify/releases/download/v0.4-alpha/"
    "multilingual_debiased-0b549669.ckpt",
    "original-small": "https://github.com/unitaryai/detoxify/releases/download/v0.1.2/original-albert-0e1d6498.ckpt",
    "unbiased-small": "https://github.com/unitaryai/detoxify/releases/download/v0.1.2/unbiased-albert-c8519128.ckpt",
}


class DetoxifyCheckpointError(FileNotFoundError):
    """No usable local Detoxify checkpoint (phf never downloads one at run time)."""


def hub_checkpoint_path(model_type: str) -> Path:
    """Where ``torch.hub`` (and so Detoxify) caches the released checkpoint of ``model_type``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / RELEASE_URLS[model_type].rsplit("/", 1)[1]


def resolve_checkpoint(model_type: str, checkpoint: str | os.PathLike | None) -> Path:
    """The local checkpoint file to load, or a :class:`DetoxifyCheckpointError` saying how to get one.

    ``checkpoint=None`` looks for the released file in torch.hub's cache (where ``Detoxify()`` would
    have downloaded it) instead of downloading it. Anything but a regular file is refused.
    """
    if checkpoint is None:
        if model_type not in RELEASE_URLS:
            raise ValueError(
                f"DetoxifyScorer: unknown model_type {model_type!r}; one of {sorted(RELEASE_URLS)}"
            )
        path = hub_checkpoint_path(model_type)
        if not path.exists():
            raise DetoxifyCheckpointError(
                f"DetoxifyScorer: no local checkpoint for model_type={model_type!r} and phf does not download "
                f"weights at run time. Download {RELEASE_URLS[model_type]} on a machine with network access and "
                f"either pass it as scorer.checkpoint=/path/to/{path.name} or put it at {path} (torch.hub's "
                "cache). Released checkpoints also need their base model's Hugging Face config and tokenizer "
                "(e.g. bert-base-uncased) in the local HF cache. Offline alternative: scorer=profanity."
            )
    else:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise DetoxifyCheckpointError(f"DetoxifyScorer: checkpoint {str(path)!r} does not exist")
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise DetoxifyCheckpointError(
            f"DetoxifyScorer: checkpoint {str(path)!r} is not a regular file (a directory, device or pipe is refused)"
        )
    return path


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _dir_digest(path: Path, max_file_bytes: int = 16 << 20) -> str:
    """Digest of a Hugging Face config/tokenizer directory: small files by content, big ones by size."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        size = f.stat().st_size
        h.update(file_digest(f).encode() if size <= max_file_bytes else f"size={size}".encode())
    return h.hexdigest()


class DetoxifyScorer(Scorer):
    """score(text) = Detoxify's ``toxicity`` probability (sigmoid of the ``toxic`` logit) in [0, 1].

    Args:
        model_type: ``original`` (the paper's training-data scorer), ``unbiased`` (its evaluation
            scorer), or another Detoxify model type; only used to find the released checkpoint in
            torch.hub's cache when ``checkpoint`` is None.
        checkpoint: a local Detoxify checkpoint file (a pickle: only trusted files!).
        huggingface_config_path: a local directory with the model's HF config and tokenizer files.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``, ...
        batch_size: texts per forward pass (memory and speed only; with padding, scores can differ
            from unbatched ones by float rounding).
    """

    pickle_args = ("checkpoint",)  # loaded as a pickle: never taken from a file found beside a model (phf.model_dir)

    name = "detoxify"
    unit = "toxicity probability (Detoxify)"

    def __init__(
        self,
        model_type: str = "original",
        checkpoint: str | None = None,
        huggingface_config_path: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_type = model_type
        self.checkpoint_path = resolve_checkpoint(model_type, checkpoint)
        self.huggingface_config_path = (
            str(Path(huggingface_config_path).expanduser()) if huggingface_config_path else None
        )
        if self.huggingface_config_path and not Path(self.huggingface_config_path).is_dir():
            raise DetoxifyCheckpointError(
                f"DetoxifyScorer: huggingface_config_path {self.huggingface_config_path!r} is not a directory"
            )
        self.device_request = device
        self.batch_size = batch_size
        # the scoring function is the checkpoint's content, not its path
        self.checkpoint_sha256 = file_digest(self.checkpoint_path)
        self.hf_config_digest = (
            _dir_digest(Path(self.huggingface_config_path)) if self.huggingface_config_path else None
        )
        self.version = f"detoxify-{_dist_version('detoxify')}+transformers-{_dist_version('transformers')}"
        self._model = None

    def settings(self) -> dict:
        return {
            "model_type": self.model_type,
            "checkpoint_sha256": self.checkpoint_sha256,
            "hf_config_digest": self.hf_config_digest,
        }

    @property
    def device(self) -> str:
        from phf.devices import resolve_device  # torch: only when the scorer runs

        return str(resolve_device(self.device_request, key="scorer.device"))

    def _load(self):
        if self._model is None:
            from detoxify import Detoxify

            try:
                self._model = Detoxify(
                    model_type=self.model_type,
                    checkpoint=str(self.checkpoint_path),
                    device=self.device,
                    huggingface_config_path=self.huggingface_config_path,
                )
            except OSError as e:
                raise DetoxifyCheckpointError(
                    f"DetoxifyScorer: loading checkpoint {str(self.checkpoint_path)!r} failed: {e}. Detoxify's "
                    "loader always reads the base model's config named in the checkpoint (e.g. bert-base-uncased) "
                    "from the Hugging Face cache; offline, that config must already be cached (set "
                    "HF_HUB_OFFLINE=1 to fail fast instead of retrying the network)."
                ) from e
            if "toxicity" not in self._model.class_names:
                raise ValueError(
                    f"DetoxifyScorer: checkpoint {str(self.checkpoint_path)!r} has no toxicity class "
                    f"(classes: {self._model.class_names})"
                )
        return self._model

    def _predict(self, texts: list[str]) -> list[float]:
        tox = self._load().predict(texts)["toxicity"]
        return tox if isinstance(tox, list) else [tox]  # detoxify squeezes a batch of one to a float

    def score(self, texts: list[str]) -> list[float]:
        return call_batched(self.name, self._predict, texts, self.batch_size)

    def __getstate__(self):  # picklable for worker processes; the model is reloaded there
        state = dict(self.__dict__)
        state["_model"] = None
        return state
