"""Shared pieces of the phf benchmarks: config, pre-packed data, step timing, memory, tables.

Every benchmark measures and prints; none asserts a time. Timings on a shared machine are noisy, so
compared variants are interleaved (A B A B ...) and reported as medians with their spread.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
               "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": ""}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)

import torch  # noqa: E402
import transformers  # noqa: E402

from phf.entry import conf_dir  # noqa: E402

CONF = conf_dir()
transformers.logging.set_verbosity_error()  # the benchmarks print tables, not per-model notices

# the model shapes the benchmarks use: conf/model/<name>.yaml plus the micro-batch they run with on CPU
SHAPES = {
    "tiny": {"model": "gpt2_tiny", "batch": 8, "block": 128},   # the demo's shape: 8 x 128 tokens
    "small": {"model": "gpt2_small", "batch": 1, "block": 256},  # GPT-2 small, 1 x 256 tokens per step
}


def shape_spec(name: str) -> dict:
    """A named shape (``tiny``, ``small``) or ``<model>:<B>x<T>[:L<layers>d<width>h<heads>]``.

    Returns {"model", "batch", "block", "model_overrides", "label"}; e.g. ``gpt2_tiny:2x512`` or
    ``gpt2_small:1x256:L4d256h4`` (a GPT-2 with 4 layers of width 256 and 4 heads).
    """
    import re

    if name in SHAPES:
        s = SHAPES[name]
        return {**s, "model_overrides": [], "label": f"{name} ({s['model']}, {s['batch']}×{s['block']})"}
    parts = name.split(":")
    m = re.fullmatch(r"(\d+)x(\d+)", parts[1]) if len(parts) >= 2 else None
    if not m:
        raise ValueError(f"bad shape {name!r}: use tiny, small or <model>:<B>x<T>[:L<n>d<n>h<n>]")
    out = {"model": parts[0], "batch": int(m[1]), "block": int(m[2]), "model_overrides": []}
    if len(parts) == 3:
        g = re.fullmatch(r"L(\d+)d(\d+)h(\d+)", parts[2])
        if not g:
            raise ValueError(f"bad model size {parts[2]!r} in {name!r}: use L<layers>d<width>h<heads>")
        out["model_overrides"] = [f"model.n_layer={g[1]}", f"model.n_embd={g[2]}", f"model.n_head={g[3]}"]
    out["label"] = name
    return out


def set_threads(n: int | None) -> int:
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


# -- config ---------------------------------------------------------------------------------------
def compose(overrides: list[str]):
    """The phf config composed from conf/ exactly as phf-train would, plus ``overrides``; GPT-2's
    tokenizer unless they choose another (the benchmarks' numbers are for GPT-2's 50,257-row LM head)."""
    from phf.entry import compose as compose_config

    return compose_config(["tokenizer=gpt2", *overrides])


def bench_overrides(model: str, objective: str, batch: int, block: int, steps: int, run_dir: str,
                    extra: list[str] = ()) -> list[str]:
    """A phf run of ``steps`` optimizer steps with no evaluation, checkpointing or progress bar."""
    return [
        "task=pep8", "data=local_pep8", f"model={model}", f"objective={objective}", "logger=none",
        "cache_dir=null", f"model.block_size={block}", f"trainer.batch_size={batch}",
        f"trainer.effective_batch_size={batch}", f"trainer.max_steps={steps}", "trainer.num_tokens=null",
        "trainer.device=cpu", "trainer.precision=fp32", "trainer.progress=false", "trainer.eval_every=0",
        "trainer.checkpoint_every=0", "trainer.final_eval=false", "task.eval.every_steps=0",
        "trainer.val_blocks=1", "trainer.resume=never", "trainer.lr=5e-4", f"run_dir={run_dir}", *extra,
    ]


# -- data -----------------------------------------------------------------------------------------
def make_blocks(n: int, block: int, cache_dir: Path | None = None) -> list[dict]:
    """``n`` packed blocks from phf's BlockStream on local_pep8 (the stdlib, PEP8-scored), cached on disk.

    The same list feeds every engine, in the same order, so all variants see identical work.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"blocks_pep8_T{block}_n{n}.pt"
        if path.is_file():
            return torch.load(path)

    from hydra.utils import instantiate

    cfg = compose(["task=pep8", "data=local_pep8", "objective=mle", "cache_dir=null", f"model.block_size={block}",
                   "data.shuffle_buffer=0", "data.num_workers=0", "run_dir=/tmp/unused"])
    stream = train_stream(cfg, instantiate(cfg.tokenizer))
    blocks = [b for _, b in zip(range(n), stream, strict=False)]
    if len(blocks) < n:
        raise RuntimeError(f"local_pep8 gave only {len(blocks)} blocks of {block} tokens")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blocks, path)
    return blocks


def train_stream(cfg, tokenizer):
    """phf's training BlockStream for ``cfg``."""
    from hydra.utils import instantiate

    from phf.data.pipeline import RunData

    return RunData.from_config(cfg).stream("train", tokenizer, instantiate(cfg.objective))


class PrepackedStream:
    """Stands in for BlockStream inside ``phf.train.train``: cycles pre-packed blocks, no scoring."""

    def __init__(self, blocks: list[dict], epochs: int | None = None):
        self.blocks, self.epochs = blocks, epochs
        self.stats: dict = {}
        self.scorer_stats: dict = {}

    def __iter__(self):
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            yield from self.blocks
            epoch += 1

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def scored_sample(self, n: int) -> list:
        return []


@contextlib.contextmanager
def prepacked(blocks: list[dict]):
    """Run ``phf.train.train`` on ``blocks`` (train and validation) without saving the final model.

    Only the data source and the final save are replaced; model, objective, optimizer, scheduler and
    the loop are phf's own.
    """
    import phf.data.pipeline as P
    from phf.model import PHFModel

    def fake(self, split: str, tokenizer, objective=None, *, epochs=None, **kwargs):
        return PrepackedStream(blocks, epochs=1 if split == "validation" else epochs)

    def no_save(self, path, tokenizer=None):
        Path(path).mkdir(parents=True, exist_ok=True)

    # every stream of the run (training and validation blocks) is built by RunData.stream
    patches = [(PHFModel, "save_pretrained", no_save), (P.RunData, "stream", fake)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, new in patches:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


# -- timing ---------------------------------------------------------------------------------------
class StepClock:
    """Timestamps every ``optimizer.step()`` of any optimizer (phf's and the HF Trainer's alike).

    The interval between consecutive optimizer steps is one whole training step: data, forward,
    loss, backward, clipping, update, scheduler, logging. Wall time and this process's CPU time are
    both recorded: on a shared machine the CPU time is the steadier of the two.
    """

    def __init__(self):
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._handle = None

    def _hook(self, opt, args, kwargs):
        self.times.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def __enter__(self):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.times, self.cpu = [], []
        self._handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    def tokens_per_s(self, tokens_per_step: int, skip: int = 1, cpu: bool = False) -> float:
        """Tokens per wall (or CPU) second over the intervals after the first ``skip`` (warm-up) ones."""
        t = (self.cpu if cpu else self.times)[skip:]
        if len(t) < 2:
            raise RuntimeError(f"need at least {skip + 2} optimizer steps to time, got {len(self.times)}")
        return tokens_per_step * (len(t) - 1) / (t[-1] - t[0])

    def step_seconds(self, skip: int = 1) -> list[float]:
        t = self.times[skip:]
        return [b - a for a, b in zip(t, t[1:], strict=False)]


# -- memory ---------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: VmHWM, reset by exec and by ``reset_peak_rss``.

    Not ``ru_maxrss``: that survives fork+exec, so a child started by a big parent reports at least
    the parent's RSS.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples RSS every ``interval`` s in a thread; ``peak`` is the highest seen (resettable)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def reset(self):
        self.peak = rss_mb()

    def __enter__(self):
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- statistics and tables ------------------------------------------------------------------------
def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """'min–max' of a sample, for reporting next to the median."""
    return f"{min(xs):,.3g}–{max(xs):,.3g}" if len(xs) > 1 else "-"


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def table(headers: list[str], rows: list[list], out=None) -> str:
    """A GitHub-markdown table; printed (to ``out``, default: the current ``sys.stdout``) and returned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    text = "\n".join(lines)
    print(text, file=out or sys.stdout, flush=True)
    return text


def machine() -> str:
    """One line describing the CPU, the thread count and the load (the machine may be shared)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
