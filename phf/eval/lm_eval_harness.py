"""Downstream capability with EleutherAI's lm-evaluation-harness (``pip install "phf[lmeval]"``).

The paper measured capability as held-out loss and KL (and GLUE after finetuning; neither the original
nor phf ships GLUE). This adapter runs any lm-evaluation-harness task (its registry's names, such as
``lambada_openai``, ``hellaswag``, ``arc_easy``, or a task YAML of your own over a local file) on a phf
model or an imported one (``phf-import``), from ``phf-eval``::

    phf-eval checkpoint=DIR +lm_eval.tasks=[arc_easy,hellaswag] +lm_eval.limit=200
    phf-eval checkpoint=DIR '+lm_eval.tasks=[/path/my_task.yaml]'        # a local task (docs/evaluation.md)

or from Python (:func:`evaluate_model_dir`). Results go to ``eval.json`` (``"lm_eval"``: one number per
task and metric, with its standard error) and, in full (lm-eval's configs, versions, sample counts), to
``lm_eval.json`` beside it; ``phf-report`` shows them (:func:`report_columns`, :func:`report_lines`).

How phf's models are wrapped (:class:`PhfLM`, lm-eval's ``HFLM`` given phf's model and tokenizer objects):

* **Loading** stays phf's: weights from safetensors only, never ``trust_remote_code``, no code from the
  model directory (``phf.model_dir``); lm-eval never loads anything by name.
* **Tokenization** is phf's (``phf.tokenizer.encode_text``): a task's text is data, never control, so a
  question that contains ``<|endoftext|>`` or ``<|aligned|>`` is those characters, not the special token.
* **The sampling prefix** (``sampling_prefix: true``, the default): every context is preceded by the
  tokens phf samples after, ``EOS`` + the objective's ``generation_prefix`` (``<|endoftext|><|aligned|>``
  for conditional training, ``<|endoftext|>`` for the others), inserted by id. A conditional model is
  thereby asked for its aligned distribution, as phf-eval samples it (Korbak et al. 2023, §4: conditional
  models are conditioned on ``<|aligned|>`` at inference). For ``loglikelihood_rolling`` (perplexity
  tasks) the prefix conditions the first window; later windows condition on the document's previous
  tokens, as lm-eval does for every model. ``sampling_prefix: false`` is lm-eval's plain HF behaviour
  (no prefix; EOS conditions an empty context).

lm-eval's task YAMLs may name Python functions (``!function utils.x``) in files beside them: a task file is
code you choose to run, like a config of your own; phf never reads one from a model directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_FILE = "lm_eval.json"  # lm-eval's full results, beside eval.json
INSTALL_HINT = 'pip install "phf[lmeval]"'


@dataclass
class LMEvalSettings:
    """``lm_eval.*`` of phf-eval: which lm-evaluation-harness tasks to run, and how.

    ``tasks``: names from lm-eval's task registry or paths of task YAML files; ``include_path``: folders
    of task YAMLs to register beside lm-eval's own. ``num_fewshot`` / ``limit`` (examples per task: a count,
    or a fraction below 1) / ``bootstrap_iters`` / ``seed`` are lm-eval's ``simple_evaluate`` arguments.
    ``max_length``: tokens per forward pass (None: the model's ``n_positions``). ``sampling_prefix``: see
    the module docstring."""

    tasks: list[str] = field(default_factory=list)
    include_path: list[str] = field(default_factory=list)
    num_fewshot: int | None = None
    limit: float | None = None
    batch_size: int = 8
    max_length: int | None = None
    sampling_prefix: bool = True
    bootstrap_iters: int = 1000
    seed: int = 1234

    def __post_init__(self):
        if isinstance(self.tasks, str) or isinstance(self.include_path, str):
            raise ValueError(f"lm_eval.tasks and lm_eval.include_path are lists, got tasks={self.tasks!r}, "
                             f"include_path={self.include_path!r} (write lm_eval.tasks=[name,...])")
        self.tasks, self.include_path = [str(t) for t in self.tasks], [str(p) for p in self.include_path]
        if any(not t for t in self.tasks):
            raise ValueError(f"lm_eval.tasks: an empty task name in {self.tasks}")
        if self.batch_size < 1 or (self.num_fewshot is not None and self.num_fewshot < 0):
            raise ValueError(f"lm_eval: batch_size must be >= 1 and num_fewshot >= 0, got {self.batch_size}, "
                             f"{self.num_fewshot}")
        if self.limit is not None and not self.limit > 0:
            raise ValueError(f"lm_eval.limit must be a count or a fraction > 0, got {self.limit}")

    @classmethod
    def from_config(cls, node: Any) -> LMEvalSettings:
        """From the config node ``lm_eval`` (a mapping; None = no tasks), naming an unknown key."""
        from omegaconf import DictConfig, OmegaConf

        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"lm_eval: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**values)


def settings_from_config(cfg) -> LMEvalSettings | None:
    """The config's ``lm_eval`` settings when it names tasks (None: no ``lm_eval`` node, or no tasks),
    checked, with lm-eval's presence checked too, before anything runs."""
    from omegaconf import OmegaConf

    node = OmegaConf.select(cfg, "lm_eval")
    settings = None if node is None else LMEvalSettings.from_config(node)
    if settings is None or not settings.tasks:
        return None
    _require_lm_eval()
    return settings


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise ImportError(f"lm_eval.tasks needs EleutherAI's lm-evaluation-harness: {INSTALL_HINT} ({e})") from e
    return HFLM


def prefix_ids(tokenizer, objective) -> list[int]:
    """Ids of what phf samples after: EOS, then the objective's ``generation_prefix`` (by id, never parsed)."""
    from phf.tokenizer import token_ids

    return [tokenizer.eos_token_id, *token_ids(tokenizer, getattr(objective, "generation_prefix", []))]


def make_lm(model, tokenizer, prefix: list[int], settings: LMEvalSettings):
    """An lm-eval ``LM`` over phf's already-loaded ``model`` and ``tokenizer``; ``prefix``: token ids that
    precede every context (empty: lm-eval's plain HF behaviour)."""
    HFLM = _require_lm_eval()
    from lm_eval import utils as lm_utils

    from phf.tokenizer import encode_text

    class PhfLM(HFLM):
        """lm-eval's ``HFLM`` with phf's tokenization and the sampling prefix (module docstring)."""

        phf_prefix: list[int] = []  # set per instance below

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                       **kwargs) -> list[int]:
            ids = encode_text(self.tokenizer, [string])[0]
            return ids[-left_truncate_len:] if left_truncate_len else ids

        def tok_batch_encode(self, strings: list[str], padding_side: str = "left", left_truncate_len: int | None = None,
                             truncation: bool = False):
            import torch

            keep = None if not left_truncate_len else max(left_truncate_len - len(self.phf_prefix), 1)
            rows = [self.phf_prefix + (ids[-keep:] if keep else ids) for ids in encode_text(self.tokenizer, strings)]
            width = max(len(r) for r in rows)
            pad = self.tokenizer.pad_token_id
            left = padding_side == "left"
            ids = [[pad] * (width - len(r)) + r if left else r + [pad] * (width - len(r)) for r in rows]
            mask = [[0] * (width - len(r)) + [1] * len(r) if left else [1] * len(r) + [0] * (width - len(r)) for r in rows]
            return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            if not self.phf_prefix:
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
            reqs = []
            for context, continuation in (r.args for r in requests):
                ctx, cont = self._encode_pair(context, continuation) if context else ([], self.tok_encode(continuation))
                reqs.append(((context, continuation), self.phf_prefix + ctx, cont))
            return self._loglikelihood_tokens(reqs, disable_tqdm=disable_tqdm)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            if not self.phf_prefix:
                return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
            head, last = self.phf_prefix[:-1], self.phf_prefix[-1]
            windows, owner = [], []
            for i, (string,) in enumerate(r.args for r in requests):
                pairs = lm_utils.get_rolling_token_windows(token_list=self.tok_encode(string), prefix_token=last,
                                                           max_seq_len=self.max_length - len(head), context_len=1)
                for j, (ctx, cont) in enumerate(map(lm_utils.make_disjoint_window, pairs)):
                    windows.append((None, (head + ctx) if j == 0 else ctx, cont))
                    owner.append(i)
            totals = [0.0] * len(requests)
            for i, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=True), strict=True):
                totals[i] += logprob
            for r, total in zip(requests, totals, strict=True):
                self.cache_hook.add_partial("loglikelihood_rolling", r.args, total)
            return totals

        def get_model_info(self) -> dict:  # HFLM's asks the Hub for the model's sha
            return {"model_num_parameters": sum(p.numel() for p in self.model.parameters()),
                    "model_dtype": str(self.model.dtype)}

    lm = PhfLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=settings.batch_size,
               max_length=settings.max_length)
    lm.phf_prefix = list(prefix)
    return lm


def _results_doc(res: dict, settings: LMEvalSettings, prefix_text: str) -> dict:
    """eval.json's ``lm_eval``: ``tasks.<task>.<metric>`` (filter ``none`` dropped from the key, others
    kept as ``metric,filter``), the examples each task ran on, the settings and the prefix used."""
    tasks = {}
    for name, metrics in {**res.get("results", {}), **res.get("groups", {})}.items():
        tasks[name] = {(k[: -len(",none")] if k.endswith(",none") else k): v for k, v in metrics.items()
                       if k not in ("alias", "sample_len") and isinstance(v, int | float) and not isinstance(v, bool)}
    import lm_eval

    return {"tasks": tasks, "n_samples": res.get("n-samples", {}), "prefix": prefix_text,
            "settings": dataclasses.asdict(settings), "lm_eval_version": getattr(lm_eval, "__version__", None),
            "file": RESULTS_FILE}


def evaluate_harness(model, tokenizer, objective, settings: LMEvalSettings, out_dir: Path | None = None) -> dict:
    """Run ``settings.tasks`` on a loaded phf model; returns eval.json's ``lm_eval`` block and, with
    ``out_dir``, writes lm-eval's full results to ``out_dir/lm_eval.json``."""
    if not settings.tasks:
        raise ValueError("lm_eval.tasks is empty: name at least one lm-evaluation-harness task or task YAML")
    _require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    prefix = prefix_ids(tokenizer, objective) if settings.sampling_prefix else []
    lm = make_lm(model, tokenizer, prefix, settings)
    for p in settings.include_path:
        if not Path(p).is_dir():
            raise FileNotFoundError(f"lm_eval.include_path: {p} is not a folder of task YAML files")
    # lm-eval's own registry (hundreds of YAMLs, seconds to index) only when a task is named rather than a file
    manager = TaskManager(include_path=settings.include_path or None,
                          include_defaults=any(not Path(t).is_file() for t in settings.tasks))
    known = set(manager.all_tasks)
    missing = [t for t in settings.tasks if t not in known and not Path(t).is_file()]
    if missing:
        raise ValueError(f"lm_eval.tasks: {missing} are neither lm-eval task names nor task YAML files "
                         "(list the names with `lm-eval ls tasks`; a path must exist)")
    res = simple_evaluate(model=lm, tasks=list(settings.tasks), num_fewshot=settings.num_fewshot,
                          limit=settings.limit, bootstrap_iters=settings.bootstrap_iters, log_samples=False,
                          task_manager=manager, random_seed=settings.seed, numpy_random_seed=settings.seed,
                          torch_random_seed=settings.seed, fewshot_random_seed=settings.seed)
    doc = _results_doc(res, settings, tokenizer.decode(prefix))
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        full = {k: res[k] for k in ("results", "groups", "n-samples", "configs", "versions", "higher_is_better")
                if k in res}
        (Path(out_dir) / RESULTS_FILE).write_text(json.dumps(full, indent=2, default=handle_non_serializable) + "\n")
    return doc


def objective_of(model_dir: Path):
    """The objective a phf model directory was trained with (``phf_objective.json``: one of phf's objectives,
    its class from phf's own ``conf/objective/``, never from the file); MLE for a model without the file."""
    from hydra.utils import instantiate

    from phf.card import read_objective_metadata
    from phf.model_dir import objective_registry
    from phf.objectives.mle import MLE

    meta = read_objective_metadata(Path(model_dir))
    if meta is None:
        return MLE()
    return instantiate({"_target_": objective_registry()[meta["objective_name"]], **meta["objective_args"]})


def evaluate_model_dir(model_dir: str | Path, tasks: list[str], settings: LMEvalSettings | None = None,
                       objective=None, device: str = "cpu", out_dir: str | Path | None = None) -> dict:
    """Load a phf (or imported) model directory safely and run lm-eval ``tasks`` on it (``settings``'
    tasks are replaced by ``tasks``); ``objective``: None = the one its ``phf_objective.json`` names.
    Returns eval.json's ``lm_eval`` block; writes ``out_dir/lm_eval.json`` when ``out_dir`` is given."""
    from transformers import AutoModelForCausalLM

    from phf.console import quiet_hf_progress
    from phf.model_dir import check_model_files, check_weights
    from phf.tokenizer import load_tokenizer

    model_dir = Path(model_dir)
    check_weights(model_dir)
    check_model_files(model_dir)
    with quiet_hf_progress():
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).to(device)
    tokenizer = load_tokenizer(str(model_dir))
    settings = dataclasses.replace(settings or LMEvalSettings(), tasks=list(tasks))
    return evaluate_harness(model, tokenizer, objective if objective is not None else objective_of(model_dir),
                            settings, None if out_dir is None else Path(out_dir))


# ---- phf-report: eval.json's lm_eval block as table columns and a markdown section


def report_columns(eval_doc: dict | None) -> dict[str, float]:
    """``{"lm_eval/<task>/<metric>": value}`` of a run's eval.json (empty without an ``lm_eval`` block)."""
    tasks = ((eval_doc or {}).get("lm_eval") or {}).get("tasks") or {}
    return {f"lm_eval/{task}/{metric}": float(v) for task, metrics in tasks.items() if isinstance(metrics, dict)
            for metric, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def report_lines(runs: list[tuple[str, dict | None]]) -> list[str]:
    """Markdown: the lm-eval numbers of ``(run name, eval.json)`` pairs (run | task | metric | value ±
    standard error); nothing when no run has an ``lm_eval`` block."""
    body = []
    for name, eval_doc in runs:
        cols = report_columns(eval_doc)
        for key in sorted(k for k in cols if "_stderr" not in k):
            _, task, metric = key.split("/", 2)
            base, _, filt = metric.partition(",")
            err = cols.get(f"lm_eval/{task}/{base}_stderr" + (f",{filt}" if filt else ""))
            shown = f"{cols[key]:.4g}" if math.isfinite(cols[key]) else "n/a"
            if err is not None and math.isfinite(err):
                shown += f" ± {err:.2g}"
            body.append(f"| {name} | {task} | {metric} | {shown} |")
    if not body:
        return []
    return ["", "## Downstream (lm-evaluation-harness)", "",
            "Each run's `eval.json` `lm_eval` block (`phf-eval +lm_eval.tasks=[...]`), ± lm-eval's standard error; "
            "full results in the run's `lm_eval.json`.", "", "| run | task | metric | value |", "|---|---|---|---|", *body]
