"""Cheap CPU measurements behind the reproduction-fidelity deviations in docs/paper.md and docs/objectives.md (issue 17).

    PYTHONPATH=. OMP_NUM_THREADS=1 python experiments/paper_fidelity/measure.py [--csnet PATH] > results.md

1. decode cleanup: the original's batch_decode cleanup (transformers 4.17) on 256-token chunks of this
   interpreter's standard library (GPT-2 BPE), scored by phf's PEP8 scorer with and without it;
2. the original's sampling-length rule on the PEP8 `functions` prompts (batches of 128 drawn with
   replacement, max_length 272, min_length 10), for phf's default signatures and, with --csnet, for the
   original's resources/functions_csnet.jsonl;
3. unlikelihood weights on PEP8 token scores of the standard library: mean a_t of the thresholded form
   (threshold 0) vs the original's soft form a_t = 1 - s_t;
4. reorder_and_upcast_attn: logits of a randomly initialised GPT-2 small under eager+reorder, eager and
   sdpa attention, fp32 and bf16 autocast;
5. restored data state (trainer.data_state_buffers=restored): how many of the MLE run's 20,000 buffered
   blocks a finetune's first blocks contain (phf's ShuffleBuffer, simulated).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time

import torch

from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter
from phf.data.sources import LocalPythonSource
from phf.eval.red_team import load_prompts
from phf.eval.sampling import SamplingSettings, clean_up_tokenization, length_limits, prompt_ids
from phf.scorers import PEP8Scorer
from phf.tokenizer import gpt2_tokenizer


def decode_cleanup(tok, n_files: int, chunk: int) -> str:
    scorer = PEP8Scorer()
    chunks = []
    docs = (d for d in LocalPythonSource().iter_from(0) if d.texts)  # skipped files are empty placeholders
    for doc in itertools.islice(docs, n_files):
        ids = tok.encode(doc.text)
        chunks += [ids[i : i + chunk] for i in range(0, len(ids) - chunk + 1, chunk)]
    raw, cleaned, s_raw, s_clean, failed = [], [], [], [], 0
    for c in chunks:
        a = tok.decode(c)
        b = clean_up_tokenization(a)
        try:  # pycodestyle crashes on a few cut-off chunks (the original scored those 0): left out
            sa, sb = scorer.score([a, b])
        except Exception:
            failed += 1
            continue
        raw.append(a), cleaned.append(b), s_raw.append(sa), s_clean.append(sb)
    changed = sum(a != b for a, b in zip(raw, cleaned, strict=True))
    chunks = raw
    m_raw, m_clean = statistics.fmean(s_raw), statistics.fmean(s_clean)
    hit_raw = statistics.fmean(s > 0 for s in s_raw)
    hit_clean = statistics.fmean(s > 0 for s in s_clean)
    return (f"| {len(chunks)} chunks of {chunk} tokens ({n_files} stdlib files; {failed} left out: pycodestyle error) | {changed / len(chunks):.1%} changed "
            f"| mean score {m_raw:.5f} → {m_clean:.5f} ({(m_clean - m_raw) / m_raw:+.1%}) "
            f"| hit rate {hit_raw:.1%} → {hit_clean:.1%} |")


def length_rule(tok, name: str, prompts: list[str], batches: int = 200) -> str:
    rng = random.Random(0)
    settings = SamplingSettings(max_length=272, min_length=10)
    new, mins, widths = [], [], []
    for _ in range(batches):
        rows = [prompt_ids(tok, [], p) for p in rng.choices(prompts, k=128)]
        max_new, row_mins = length_limits(rows, tok.eos_token_id, settings)
        new.append(max_new)
        widths.append(max(len(r) for r in rows))
        mins += row_mins
    lens = [len(tok.encode(p)) for p in prompts]
    return (f"| {name} ({len(prompts)} prompts, {statistics.fmean(lens):.1f} tokens mean, max {max(lens)}) "
            f"| padded width {statistics.fmean(widths):.1f} | new tokens {statistics.fmean(new):.1f} "
            f"(min {min(new)}, max {max(new)}) vs phf's 256 | min new tokens {statistics.fmean(mins):.2f} "
            f"(0 for {statistics.fmean(m == 0 for m in mins):.0%} of rows) vs phf's 10 |")


def ul_weights(tok, n_blocks: int) -> str:
    s = BlockStream(LocalPythonSource(), LineSegmenter(), PEP8Scorer(), tok, block_size=1024, val_fraction=0.0,
                    shuffle_buffer=0, score_batch_docs=16)
    scores = torch.cat([b["token_scores"] for b in itertools.islice(iter(s), n_blocks)])
    hard = (scores <= 0.0).float().mean().item()
    soft = (1.0 - scores).mean().item()
    return (f"| {scores.numel():,} stdlib tokens | thresholded (τ 0): mean a_t {hard:.3f}, "
            f"{1 - hard:.1%} of tokens get the unlikelihood term | soft (original): mean a_t {soft:.4f}, "
            f"mean weight of the unlikelihood term {1 - soft:.4f} (max {scores.max().item():.3f}) |")


def attention(seq: int) -> list[str]:
    from transformers import GPT2Config, GPT2LMHeadModel

    out = []
    torch.manual_seed(0)
    ids = torch.randint(0, 50257, (1, seq))
    base = GPT2Config(n_positions=1024, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    torch.manual_seed(0)
    ref_model = GPT2LMHeadModel(GPT2Config(**base.to_dict(), attn_implementation="eager")).eval()
    state = ref_model.state_dict()
    variants = {"eager + reorder_and_upcast_attn": ("eager", True), "eager": ("eager", False),
                "sdpa (reorder ignored)": ("sdpa", True)}
    logits = {}
    for dtype in ("fp32", "bf16"):
        for name, (impl, reorder) in variants.items():
            cfg = GPT2Config(**{**base.to_dict(), "reorder_and_upcast_attn": reorder}, attn_implementation=impl)
            m = GPT2LMHeadModel(cfg).eval()
            m.load_state_dict(state)
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.no_grad()
            with torch.no_grad(), ctx:
                logits[dtype, name] = m(ids).logits.float()
    ref = logits["fp32", "eager + reorder_and_upcast_attn"]
    for (dtype, name), lg in logits.items():
        d = (lg - ref).abs()
        out.append(f"| {dtype} | {name} | max |Δlogit| {d.max().item():.2e} | mean {d.mean().item():.2e} |")
    return out


def restored_buffer(size: int = 20_000, ebs: int = 64) -> list[str]:
    from phf.data.pack import ShuffleBuffer

    buf = ShuffleBuffer(size, random.Random(0))
    buf.items = [{"mle": 1}] * size  # the MLE run's buffered blocks
    out = [buf.push({"mle": 0})["mle"] for _ in range(6 * size)]
    rows = []
    for n in (size // ebs * ebs, 2 * size, 3 * size, 6 * size):
        rows.append(f"| first {n:,} blocks ({n // ebs:,} steps at EBS {ebs}) | {sum(out[:n]):,} MLE blocks "
                    f"({sum(out[:n]) / n:.1%}) |")
    # The original's skip_tokens restarts the unshuffled block stream at block K = the blocks MLE trained
    # on (toxicity: 25,354 steps x 64); MLE had read K + size blocks, `size` of them still buffered.
    k = 25_354 * ebs
    mle = ShuffleBuffer(size, random.Random(0))
    trained, read = set(), 0
    while len(trained) < k:
        o = mle.push(read)
        read += 1
        if o is not None:
            trained.add(o)
    again = sum(j in trained for j in range(k, k + size))
    assert again == size - sum(j >= k for j in mle.items)  # MLE's buffer: the untrained ones of both ranges
    rows.append(f"| original skip_tokens (toxicity, K = {k:,} blocks) | of the blocks K … K+{size:,} it reads first, "
                f"{again:,} ({again / size:.1%}) had been trained on by MLE (seen twice); as many blocks before K "
                f"(still in MLE's buffer) were never trained on |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csnet", help="the original's resources/functions_csnet.jsonl, if you have it")
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--blocks", type=int, default=300)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--only", choices=["restored", "decode"], help="run one section")
    ap.add_argument("--chunk", type=int, default=256, help="tokens per stdlib chunk (decode cleanup)")
    args = ap.parse_args()
    if args.only == "decode":
        print(decode_cleanup(gpt2_tokenizer(), args.files, args.chunk))
        return
    if args.only == "restored":
        print("\n## restored data state: MLE blocks among a finetune's first blocks (shuffle buffer 20,000)\n")
        print("\n".join(restored_buffer()))
        return
    torch.set_num_threads(1)
    tok = gpt2_tokenizer()
    t0 = time.time()
    print("## decode cleanup (PEP8 scores of stdlib chunks)\n")
    print(decode_cleanup(tok, args.files, args.chunk))
    print("\n## sampling-length rule (PEP8 functions, GPT-2 BPE)\n")
    print(length_rule(tok, "phf pep8_functions_original_format.jsonl",
                      load_prompts("pep8_functions_original_format.jsonl")))
    if args.csnet:
        print(length_rule(tok, "original functions_csnet.jsonl", load_prompts(args.csnet)))
    print("\n## unlikelihood weights (PEP8 token scores)\n")
    print(ul_weights(tok, args.blocks))
    print(f"\n## attention (GPT-2 small, random init, one sequence of {args.seq} tokens; reference fp32 eager + reorder)\n")
    print("\n".join(attention(args.seq)))
    print(f"\n({time.time() - t0:.0f} s on CPU, one thread)")


if __name__ == "__main__":
    main()
