"""Per-scorer throughput on realistic segments: segments/s and characters/s per core.

Prose scorers (profanity, pii, detoxify) score the sentences of the local prose corpus (the
``local_toxicity`` corpus, segmented by phf's SentenceSegmenter); pep8 scores whole standard-library
files line by line with file context (``score_document``), as the pipeline does.

"Per core" = work / CPU seconds of this process with one thread (``torch.set_num_threads(1)``,
``OMP_NUM_THREADS=1``), measured with ``time.process_time``: it does not depend on what else runs on
the machine, unlike wall time (also printed). Scorer loading is excluded (a warm-up batch first).
Also measured: the score cache (``CachedScorer``) answering from a warm cache.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS= \\
        python experiments/benchmarks/bench_scorers.py --segments 4000 --json out.json

Detoxify needs a checkpoint: by default a tiny random BERT is built (plumbing speed only, not the
paper's model); ``--detoxify-base`` builds a random BERT-base-shaped checkpoint (110M parameters,
the architecture of Detoxify ``original``; random weights score nonsense at the real model's speed;
the WordPiece vocabulary is trained on the local prose, so token counts are realistic).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def prose_segments(n: int, cache_dir: str) -> list[str]:
    from phf.data.corpora import LocalToxicitySource
    from phf.data.segment import SentenceSegmenter

    seg = SentenceSegmenter()
    out: list[str] = []
    n_docs = 400
    while len(out) < n:
        out = [s for d in LocalToxicitySource(cache_dir, n_docs=n_docs) for s in seg(d.texts[0])]
        n_docs *= 2
    return out[:n]


def python_files(n_lines: int) -> list[list[str]]:
    from phf.data.segment import LineSegmenter
    from phf.data.sources import LocalPythonSource

    docs, total = [], 0
    for d in LocalPythonSource(max_chars=20000):
        if d.texts:
            lines = LineSegmenter()(d.texts[0])
            docs.append(lines)
            total += len(lines)
            if total >= n_lines:
                break
    return docs


def build_detoxify_checkpoint(root: Path, base: bool, texts: list[str]) -> tuple[str, str]:
    """A Detoxify-format checkpoint (offline_recipes.md §4): tiny, or BERT-base-shaped."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    hf_dir = root / ("hf-base" if base else "hf-tiny")
    hf_dir.mkdir(parents=True, exist_ok=True)
    if base:
        from tokenizers import BertWordPieceTokenizer

        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train_from_iterator(texts, vocab_size=30522, min_frequency=1)
        wp.save_model(str(hf_dir))
        cfg = dict(vocab_size=wp.get_vocab_size())  # BERT-base defaults otherwise (768 d, 12 layers)
    else:
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        words += list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'") + [
            "##" + c for c in "abcdefghijklmnopqrstuvwxyz"
        ]
        (hf_dir / "vocab.txt").write_text("\n".join(words) + "\n")
        cfg = dict(
            vocab_size=len(words),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
    tok = BertTokenizerFast.from_pretrained(str(hf_dir), do_lower_case=True)
    tok.model_max_length = 512
    tok.save_pretrained(str(hf_dir))
    model = BertForSequenceClassification(BertConfig(num_labels=len(CLASSES), **cfg))
    model.config.save_pretrained(str(hf_dir))
    ckpt = root / ("base.ckpt" if base else "tiny.ckpt")
    arch = {
        "model_type": str(hf_dir),
        "model_name": "BertForSequenceClassification",
        "tokenizer_name": "BertTokenizer",
        "num_classes": len(CLASSES),
    }
    torch.save(
        {
            "config": {"arch": {"args": arch}, "dataset": {"args": {"classes": CLASSES}}},
            "state_dict": model.state_dict(),
        },
        ckpt,
    )
    return str(ckpt), str(hf_dir)


def measure(fn, units: list, chars: int, repeat_min_s: float = 2.0) -> dict:
    """Run ``fn(units)`` (at least once, repeated until ``repeat_min_s`` CPU seconds)."""
    cpu, wall, rounds = 0.0, 0.0, 0
    while cpu < repeat_min_s or rounds == 0:
        c0, w0 = time.process_time(), time.perf_counter()
        fn(units)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        rounds += 1
    return {
        "rounds": rounds,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "per_round_cpu_s": round(cpu / rounds, 4),
        "chars": chars,
        "units": len(units),
    }


def report(name: str, segs: int, chars: int, m: dict, results: dict) -> None:
    per_cpu = m["per_round_cpu_s"]
    row = {
        "segments": segs,
        "chars": chars,
        "segments_per_s_per_core": round(segs / per_cpu, 1),
        "chars_per_s_per_core": round(chars / per_cpu),
        "segments_per_s_wall": round(segs * m["rounds"] / m["wall_s"], 1),
        "cpu_s_per_round": per_cpu,
        "rounds": m["rounds"],
    }
    results[name] = row
    print(
        f"{name:<28} {row['segments_per_s_per_core']:>12,.1f} seg/s/core {row['chars_per_s_per_core']:>12,} chars/s/core"
        f"   (wall {row['segments_per_s_wall']:,.1f} seg/s; {segs} segments, {chars:,} chars)",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=4000, help="prose sentences per scorer")
    p.add_argument("--pep8-lines", type=int, default=4000)
    p.add_argument("--scorers", default="profanity,pii,pep8,detoxify,cache")
    p.add_argument("--detoxify-base", action="store_true", help="also a BERT-base-shaped random checkpoint")
    p.add_argument("--detoxify-segments", type=int, default=256, help="sentences for the BERT-base run")
    p.add_argument("--cache-dir", default=None, help="where the corpora are built (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="phf-bench-"))
    cache_dir = args.cache_dir or str(work / "cache")
    which = args.scorers.split(",")
    results: dict = {}
    segs = prose_segments(args.segments, cache_dir)
    chars = sum(map(len, segs))
    print(
        f"prose: {len(segs)} sentences, {chars:,} chars (mean {chars / len(segs):.0f}); "
        f"python {platform.python_version()}, torch threads {torch.get_num_threads()}",
        flush=True,
    )

    if "profanity" in which:
        from phf.scorers import ProfanityScorer

        s = ProfanityScorer()
        s.score(segs[:10])
        report("profanity", len(segs), chars, measure(s.score, segs, chars), results)
    if "pii" in which:
        from phf.scorers import PIIScorer

        s = PIIScorer()
        s.score(segs[:10])
        report("pii (patterns, blank spaCy)", len(segs), chars, measure(s.score, segs, chars), results)
    if "pep8" in which:
        from phf.scorers import PEP8Scorer

        files = python_files(args.pep8_lines)
        s = PEP8Scorer()
        n_lines = sum(map(len, files))
        n_chars = sum(len(x) for f in files for x in f)
        report(
            "pep8 (lines in file context)",
            n_lines,
            n_chars,
            measure(lambda fs: [s.score_document(f) for f in fs], files, n_chars),
            results,
        )
    if "detoxify" in which:
        from phf.scorers import DetoxifyScorer

        ckpt, hf = build_detoxify_checkpoint(work, False, segs)
        s = DetoxifyScorer(checkpoint=ckpt, huggingface_config_path=hf, device="cpu", batch_size=64)
        s.score(segs[:10])
        report("detoxify (tiny random BERT)", len(segs), chars, measure(s.score, segs, chars), results)
        if args.detoxify_base:
            ckpt, hf = build_detoxify_checkpoint(work, True, segs)
            sub = segs[: args.detoxify_segments]
            sub_chars = sum(map(len, sub))
            s = DetoxifyScorer(checkpoint=ckpt, huggingface_config_path=hf, device="cpu", batch_size=32)
            s.score(sub[:4])
            report(
                "detoxify (BERT-base shape)",
                len(sub),
                sub_chars,
                measure(s.score, sub, sub_chars, 0.0),
                results,
            )
            if torch.cuda.is_available():
                g = DetoxifyScorer(checkpoint=ckpt, huggingface_config_path=hf, device="cuda", batch_size=256)
                g.score(segs[:256])
                t0 = time.perf_counter()
                g.score(segs)
                torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                results["detoxify (BERT-base shape, cuda)"] = {
                    "segments_per_s_wall": round(len(segs) / dt, 1)
                }
                print(
                    f"detoxify BERT-base on {torch.cuda.get_device_name()}: {len(segs) / dt:,.0f} seg/s wall"
                )
    if "cache" in which:
        from phf.scorers import ProfanityScorer
        from phf.scorers.cache import build_scorer

        c = build_scorer(ProfanityScorer(), work / "scorecache")
        c.score(segs)  # fill
        report("score cache, warm (hits)", len(segs), chars, measure(c.score, segs, chars), results)
        assert c.stats()["segments_scored"] == len(set(segs))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": platform.processor() or platform.machine(), "results": results}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
