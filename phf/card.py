"""What a saved phf model says about itself: generation settings, a model card and its objective.

``generation_config`` puts the evaluation's sampling settings and the objective's banned tokens into
the HF model's ``generation_config`` (saved as ``generation_config.json``), so ``model.generate`` and a
``transformers`` pipeline sample the way phf evaluates. The control prefix (``<|endoftext|><|aligned|>``
for conditional training) cannot be expressed there; ``write_model_card`` states it, with runnable
``generate`` and ``pipeline`` examples, in the model directory's ``README.md``, and writes the same facts
for programs into ``phf_objective.json`` (``read_objective_metadata``): phf-eval builds the objective a
model was trained with from it, so a model directory alone (a download from the Hub, a checkpoint
copied away from its run) is evaluated with its control tokens and banned tokens. phf-train writes both
into ``final/`` and into every ``checkpoints/step_*``.

The file is data, never code (``phf.model_dir``): it names the objective by its registry name (the
``conf/objective/<name>.yaml`` it was configured from) with its arguments as plain values, never a
``_target_``; phf-eval builds only phf's own objectives from it.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from phf.model_dir import read_objective_file, registry_name
from phf.rundir import FINAL

METADATA_FILE = "phf_objective.json"
METADATA_VERSION = 2  # 1: objective_config with a _target_ (still read); 2: objective_name + objective_args
CARD_FILE = "README.md"


def generation_config(lm, tokenizer, objective, temperature: float, top_p: float, top_k: int):
    """Set ``lm.generation_config`` for sampling as phf does: nucleus sampling, EOS = pad, and the
    objective's banned tokens as ``bad_words_ids`` (e.g. ``<|misaligned|>``)."""
    gc = lm.generation_config
    gc.do_sample, gc.temperature, gc.top_p, gc.top_k = True, temperature, top_p, top_k
    gc.eos_token_id = gc.bos_token_id = tokenizer.eos_token_id
    gc.pad_token_id = tokenizer.pad_token_id
    banned = tokenizer.convert_tokens_to_ids(list(objective.banned_tokens))
    gc.bad_words_ids = [[i] for i in banned] or None
    return gc


def objective_metadata(cfg, objective, tokenizer) -> dict:
    """``phf_objective.json``: the objective's registry name (``conf/objective/<name>.yaml``; null for a
    class no phf config names, which phf-eval then asks for) and resolved arguments (plain data), its task,
    and what sampling needs (prefix, banned and special tokens)."""
    config = OmegaConf.to_container(cfg.objective, resolve=True)
    return {
        "phf_metadata_version": METADATA_VERSION,
        "objective": _short(cfg.objective._target_),  # the class configured, not a reward wrapper's
        "objective_name": registry_name(cfg.objective._target_),
        "objective_args": {k: v for k, v in config.items() if not k.startswith("_")},
        "task": cfg.task.name,
        "generation_prefix": tokenizer.eos_token + "".join(objective.generation_prefix),
        "special_tokens": list(objective.special_tokens),
        "banned_tokens": list(objective.banned_tokens),
    }


def read_objective_metadata(model_dir: Path) -> dict | None:
    """The ``phf_objective.json`` of a model directory, checked as data (``phf.model_dir``): its
    ``objective_name`` (one of phf's objectives), ``objective_args`` and ``task`` (one of phf's tasks);
    None for a model phf did not write (no such file). A file that is there but unusable is a
    ``ModelDirError`` naming it and the field, never ignored."""
    return read_objective_file(Path(model_dir), METADATA_FILE)


def _short(target: str | None) -> str:
    return (target or "?").rsplit(".", 1)[-1]


def _hyperparameters(node) -> list[str]:
    """Markdown table rows ``| key | value |`` of a config node's settings (its ``_target_`` left out)."""
    flat = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return [f"| `{k}` | `{json.dumps(v, default=str)}` |" for k, v in flat.items() if k != "_target_"]


def write_model_card(path: Path, cfg, objective, tokenizer, metrics: dict) -> None:
    """``path/README.md`` (objective and its hyperparameters, task, scorer, data, training settings, tokens
    seen, metrics, how to sample with ``generate`` and a ``pipeline``, citation) and ``path/phf_objective.json``.
    ``metrics`` holds at least ``tokens_seen`` (and ``step``); a checkpoint's are its training metrics so far."""
    path = Path(path)
    meta = objective_metadata(cfg, objective, tokenizer)
    prefix = meta["generation_prefix"]
    name = meta["objective"]

    def sel(key: str, default="?"):
        return OmegaConf.select(cfg, key, default=default)

    shown = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not k.endswith("_per_s")}
    stage = ("the end of training (`final/`)" if path.name.split(".")[0] == FINAL
             else f"step {metrics.get('step', '?')} (a checkpoint)")
    eval_scorer = sel("task.eval.scorer._target_", None)
    banned = ", ".join(f"`{t}`" for t in meta["banned_tokens"]) or "none"
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        "tags: [phf, pretraining-with-human-feedback, gpt2]", "---", "",
        f"# {cfg.task.name} · {name} (phf)", "",
        f"A GPT-2 ({cfg.model.n_layer} layers, d {cfg.model.n_embd}, context {cfg.model.block_size}) pretrained "
        f"from scratch with phf's `{name}` objective (Korbak et al. 2023, *Pretraining Language Models with "
        f"Human Preferences*) on `{_short(sel('data.source._target_'))}`, scored by "
        f"`{_short(sel('scorer._target_'))}` ({cfg.task.name} task), "
        f"{int(metrics.get('tokens_seen') or 0):,} training tokens, seed {cfg.seed}; saved at {stage}.", "",
        "## Training", "",
        "| | |", "|---|---|",
        f"| objective | `{sel('objective._target_')}` |",
        f"| task | `{cfg.task.name}` |",
        f"| training scorer | `{sel('scorer._target_')}` |",
        f"| evaluation scorer | `{eval_scorer or sel('scorer._target_')}` |",
        f"| data | `{sel('data.source._target_')}` |",
        f"| tokenizer | `{sel('tokenizer._target_')}` ({len(tokenizer)} tokens) |",
        f"| tokens seen | {int(metrics.get('tokens_seen') or 0):,} |",
        *([f"| held-out set | {int(metrics['val/num_tokens']):,} tokens (validation loss; "
           + (f"`data.val_path` {sel('data.val_path')}" if sel("data.val_path", None) is not None
              else f"`data.val_fraction` {sel('data.val_fraction')}") + ") |"]
          if isinstance(metrics.get("val/num_tokens"), int | float) else []),
        f"| learning rate, batch | {sel('trainer.lr')}, {sel('trainer.effective_batch_size')} sequences of "
        f"{cfg.model.block_size} tokens |",
        f"| seed | {cfg.seed} |", "",
        "Objective hyperparameters:", "",
        "| key | value |", "|---|---|", *(_hyperparameters(cfg.objective) or ["| (none) | |"]), "",
        f"`{METADATA_FILE}` holds the same for programs: `phf-eval checkpoint=THIS_DIR` evaluates with this "
        "objective without being told.", "",
        "## How to sample", "",
        f"Start every sample with `{prefix}`" + (" (the objective's control prefix)." if objective.generation_prefix
                                                  else "."),
        f"Banned tokens: {banned}. They are in `generation_config.json` (`bad_words_ids`), with phf's sampling "
        "settings (nucleus sampling, temperature, top-p), so `generate` and pipelines apply them:", "",
        "```python",
        "from transformers import pipeline",
        'generate = pipeline("text-generation", model="THIS_DIR")',
        f"out = generate({prefix!r}, max_new_tokens=120, return_full_text=False)",
        'print(out[0]["generated_text"])',
        "```", "",
        "or, with the model and tokenizer:", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("THIS_DIR")',
        'tok = AutoTokenizer.from_pretrained("THIS_DIR")',
        f"ids = tok({prefix!r}, return_tensors='pt', split_special_tokens=False).input_ids",
        "out = model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=120)",
        "print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))",
        "```", "",
        "## Metrics" + (" at the end of training" if path.name.split(".")[0] == FINAL else " so far"), "",
        "```json", json.dumps(shown, indent=2, sort_keys=True), "```", "",
        "## Citation", "", "```bibtex",
        "@inproceedings{korbak2023pretraining,",
        "  title={Pretraining Language Models with Human Preferences},",
        "  author={Korbak, Tomasz and Shi, Kejian and Chen, Angelica and Bhalerao, Rasika and Buckley, "
        "Christopher L. and Phang, Jason and Bowman, Samuel R. and Perez, Ethan},",
        "  booktitle={ICML}, year={2023}}",
        "```",
    ]
    (path / CARD_FILE).write_text("\n".join(lines) + "\n")
    (path / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
