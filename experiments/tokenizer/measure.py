"""What the fitted BPE changes: bytes per token on each offline corpus and gpt2_tiny's training speed.

For each local corpus (``local_pep8`` = the stdlib, ``local_pii``, ``local_toxicity``) it fits the
``tokenizer=bpe`` tokenizer exactly as ``phf-train`` does (same config, cached), then measures on the
held-out documents (the content-hash split the tokenizer never saw) the UTF-8 bytes per token of GPT-2's
BPE and of the fitted one, and times ``gpt2_tiny`` (8 x 128 tokens per step, one thread, the demo's
shape) for ``--steps`` optimizer steps on pre-packed blocks with each tokenizer: tokens/s and bytes/s
(= tokens/s x bytes/token, the rate at which the model reads text).

    python experiments/tokenizer/measure.py --steps 60 > experiments/tokenizer/results.md
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
CORPORA = {"local_pep8": "pep8", "local_pii": "pii", "local_toxicity": "toxicity_profanity"}


def held_out_texts(cfg, n: int) -> list[str]:
    from hydra.utils import instantiate

    from phf.data.pipeline import in_validation
    from phf.data.sources import is_placeholder

    src = instantiate(cfg.data.source)
    docs = (d for d in src if not is_placeholder(d) and in_validation(d, cfg.data.val_fraction))
    return [d.text for d in itertools.islice(docs, n)]


def train_speed(cfg, tokenizer, steps: int) -> float:
    """Tokens/s of gpt2_tiny over ``steps`` MLE steps (after 5 warm-up steps) on random token ids: the
    speed depends on the vocabulary size and the shape, not on the text."""
    from hydra.utils import instantiate

    from phf.objectives import MLE

    torch.manual_seed(0)
    model = instantiate(cfg.model, tokenizer=tokenizer, objective=None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mle = MLE()
    B, T = cfg.trainer.batch_size, cfg.model.block_size
    ids = torch.randint(0, len(tokenizer), (steps + 5, B, T))
    scores = torch.zeros(B, T)
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        logits, _ = model(ids[i])
        out = mle.loss(logits, ids[i], scores)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * B * T / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--docs", type=int, default=200, help="held-out documents per corpus for bytes/token")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from hydra.utils import instantiate

    from phf.entry import compose
    from phf.tokenizer import gpt2_tokenizer

    gpt2 = gpt2_tokenizer()
    print(f"# Fitted BPE vs GPT-2's BPE (`python experiments/tokenizer/measure.py --steps {args.steps}`)\n")
    print(f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, one thread; gpt2_tiny (2 layers, d 128), "
          "8 × 128 tokens per step, MLE, fp32.\n")
    print("| corpus | tokenizer | vocab | fit (s) | bytes/token (held-out) | train tokens/s | train bytes/s |")
    print("|---|---|---|---|---|---|---|")
    for data, task in CORPORA.items():
        cfg = compose([f"data={data}", f"task={task}", "model=gpt2_tiny", "model.dropout=0.0", "trainer.batch_size=8",
                       "tokenizer=bpe", "tokenizer.vocab_size=8192"])  # the demo's model and tokenizer
        texts = held_out_texts(cfg, args.docs)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        t0 = time.perf_counter()
        fitted = instantiate(cfg.tokenizer)
        fit_s = time.perf_counter() - t0
        for name, tok, fit in (("gpt2", gpt2, "–"), ("bpe (fitted)", fitted, f"{fit_s:.1f}")):
            bpt = n_bytes / sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
            tps = train_speed(cfg, tok, args.steps)
            print(f"| {data} ({len(texts)} docs) | {name} | {len(tok):,} | {fit} | {bpt:.2f} | {tps:,.0f} | {tps * bpt:,.0f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
