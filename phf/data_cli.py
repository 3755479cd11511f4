"""``phf-data``: show what the model will be trained on — the first packed training blocks.

    phf-data task=pii objective=conditional data=jsonl data.source.path=train.jsonl # readable, 4 blocks
    phf-data objective=conditional n=2 --json                                 # one JSON object per block
    phf-data +experiment=pep8_pretrain model.block_size=64 n=1

Arguments are the same Hydra overrides as ``phf-train`` (the config is composed the same way and the
blocks come from the same pipeline: source → segment → score → the objective's transform → pack →
shuffle, rank 0 of 1), plus its own:

    n=N              blocks to print (default 4)
    json=true        one JSON object per line: {"block", "input_ids", "token_scores"} (also ``--json``)
    split=validation the held-out split instead (raw text: no objective transform, no shuffle)

Blocks are printed as they are produced (constant memory, any ``n``); when the reader closes the pipe
(``phf-data … | head -1``) phf-data stops quietly with exit status 0.

Readable output shows each block as runs of tokens that share a score, ``score | text``; special
tokens that phf inserted (EOS between documents, control tokens) are marked ``⟦<|aligned|>⟧`` on their
own line, so a control-token *string* inside a document (plain text) is told apart at a glance.
"""

from __future__ import annotations

import itertools
import json
import sys

from phf.console import plain, reader_gone
from phf.data.pipeline import RunData
from phf.entry import compose
from phf.guidance import build_objective

OWN = {"n": "4", "json": "false", "split": "train"}


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(own options, Hydra overrides)."""
    own, overrides = dict(OWN), []
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            print(plain(__doc__))
            sys.exit(0)
        if arg == "--json":
            own["json"] = "true"
        elif arg == "--n":
            own["n"] = next(args, "")
        elif arg.partition("=")[0] in OWN:
            key, _, value = arg.partition("=")
            own[key] = value
        elif arg.startswith("--n="):
            own["n"] = arg.partition("=")[2]
        else:
            overrides.append(arg)
    if not own["n"].isdigit() or int(own["n"]) < 1:
        raise SystemExit(f"phf-data: n must be a positive integer, got {own['n']!r}")
    if own["json"].lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise SystemExit(f"phf-data: json must be true or false, got {own['json']!r}")
    if own["split"] not in ("train", "validation"):
        raise SystemExit(f"phf-data: split must be train or validation, got {own['split']!r}")
    return own, overrides


def blocks(cfg, n: int, split: str = "train"):
    """(tokenizer, an iterator of the first ``n`` blocks of ``split``) exactly as ``phf-train`` would pack
    them; lazy: a block is built when it is asked for."""
    from hydra.utils import instantiate

    tokenizer = instantiate(cfg.tokenizer)  # the run's tokenizer: fitted (cached) for tokenizer=bpe
    objective, _ = build_objective(cfg, tokenizer)
    run_data = RunData.from_config(cfg)
    data = run_data.data
    stream = run_data.stream(split, tokenizer, objective, epochs=None if split == "train" else 1)
    if split == "train" and getattr(objective, "requires_prepare", False):
        objective.prepare(stream.scored_sample(data.prepare_docs))
    return tokenizer, itertools.islice(iter(stream), n)


def readable(tokenizer, index: int, block) -> str:
    """One block as ``score | text`` runs; phf's special tokens marked on their own lines."""
    ids, scores = block["input_ids"].tolist(), block["token_scores"].tolist()
    special = set(tokenizer.all_special_ids)
    lines = [f"=== block {index}: {len(ids)} tokens, mean score {sum(scores) / len(scores):.4g} ==="]
    run: list[int] = []

    def flush(score):
        if run:
            lines.append(f"{score:>10.4g} | {tokenizer.decode(run)!r}")
            run.clear()

    prev = None
    for tid, s in zip(ids, scores, strict=True):
        if tid in special:
            flush(prev)
            lines.append(f"{s:>10.4g} | ⟦{tokenizer.convert_ids_to_tokens(tid)}⟧ (special token, id {tid})")
        else:
            if run and s != prev:
                flush(prev)
            run.append(tid)
        prev = s
    flush(prev)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    own, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = compose(["run_dir=.", *overrides], prog="phf-data")  # run_dir: Hydra's job directory, which nothing launched here
    tokenizer, out = blocks(cfg, int(own["n"]), own["split"])
    as_json = own["json"].lower() in ("true", "1", "yes")
    count = 0
    from phf.entry import UsageError

    try:
        for i, b in enumerate(out):
            if as_json:
                print(json.dumps({"block": i, "input_ids": b["input_ids"].tolist(),
                                  "token_scores": b["token_scores"].tolist()}), flush=True)
            else:
                print(readable(tokenizer, i, b), flush=True)
            count += 1
    except BrokenPipeError:
        reader_gone()
        return
    except UsageError as e:  # e.g. the task's scorer does not fit the text: the message says what to choose
        raise SystemExit(f"phf-data: {e}") from None
    if count < int(own["n"]):
        print(f"phf-data: the {own['split']} split gave only {count} blocks", file=sys.stderr)


if __name__ == "__main__":
    main()
