"""What a saved phf model says about itself: generation settings and a model card.

``generation_config`` puts the evaluation's sampling settings and the objective's banned tokens into
the HF model's ``generation_config`` (saved as ``generation_config.json``), so ``model.generate`` and a
``transformers`` pipeline sample the way phf evaluates. The control prefix (``<|endoftext|><|aligned|>``
for conditional training) cannot be expressed there; ``write_model_card`` states it, with a runnable
example, in ``final/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path


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


def write_model_card(path: Path, cfg, objective, tokenizer, metrics: dict) -> None:
    """``path/README.md``: objective, task, data, tokens, final metrics and how to sample."""
    prefix = tokenizer.eos_token + "".join(objective.generation_prefix)
    name = type(objective).__name__
    shown = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not k.endswith("_per_s")}
    lines = [
        "---", "library_name: transformers", "tags: [phf, pretraining-with-human-feedback, gpt2]", "---", "",
        f"# {cfg.task.name} · {name} (phf)", "",
        f"A GPT-2 ({cfg.model.n_layer} layers, d {cfg.model.n_embd}, context {cfg.model.block_size}) pretrained "
        f"from scratch with phf's `{name}` objective (Korbak et al. 2023, *Pretraining Language Models with "
        f"Human Preferences*) on `{cfg.data.source._target_.rsplit('.', 1)[-1]}`, scored by "
        f"`{cfg.scorer._target_.rsplit('.', 1)[-1]}` ({cfg.task.name} task), "
        f"{metrics.get('tokens_seen', 0):,} training tokens, seed {cfg.seed}.", "",
        f"Objective: `{objective!r}`", "",
        "## How to sample", "",
        f"Start every sample with `{prefix}`" + (" (the objective's control prefix)." if objective.generation_prefix
                                                  else "."),
        "The tokens the model must not write are in `generation_config.json` (`bad_words_ids`), with "
        "phf's sampling settings, so `generate` and pipelines apply them:", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("THIS_DIR")',
        'tok = AutoTokenizer.from_pretrained("THIS_DIR")',
        f"ids = tok({prefix!r}, return_tensors='pt', split_special_tokens=False).input_ids",
        "out = model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=120)",
        "print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))",
        "```", "",
        "## Final metrics", "", "```json", json.dumps(shown, indent=2, sort_keys=True), "```", "",
        "## Citation", "", "```bibtex",
        "@inproceedings{korbak2023pretraining,",
        "  title={Pretraining Language Models with Human Preferences},",
        "  author={Korbak, Tomasz and Shi, Kejian and Chen, Angelica and Bhalerao, Rasika and Buckley, "
        "Christopher L. and Phang, Jason and Bowman, Samuel R. and Perez, Ethan},",
        "  booktitle={ICML}, year={2023}}",
        "```",
    ]
    (Path(path) / "README.md").write_text("\n".join(lines) + "\n")
