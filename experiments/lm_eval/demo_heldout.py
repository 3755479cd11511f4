"""lm-eval's rolling perplexity (bits per byte) of the demo's held-out documents, through phf's adapter.

    python experiments/lm_eval/demo_heldout.py outputs/demo CORPUS_DIR OUT_DIR

CORPUS_DIR: the demo's local_pii corpus (``<cache_dir>/corpora/local_pii-*``, its docs.jsonl); the held-out
documents are the ids of ``outputs/demo/mle/heldout_clean/step_*.jsonl`` (the demo's held-out split), their
text as the corpus holds it (personal data injected where the corpus injected it). A local lm-eval task of
output type ``loglikelihood_rolling`` over them; each model with and without its sampling prefix
(``lm_eval.sampling_prefix``). Writes OUT_DIR/results.json and prints a table with the wall time.
"""

import json
import sys
import time
from pathlib import Path

import torch

from phf import rundir
from phf.eval.lm_eval_harness import LMEvalSettings, evaluate_model_dir


def main(demo: Path, corpus: Path, out: Path) -> None:
    torch.set_num_threads(1)
    ids = set(rundir.read_heldout_clean(demo / "mle"))  # the documents of its last clean held-out evaluation
    docs = [d for d in map(json.loads, (corpus / "docs.jsonl").read_text().splitlines()) if d["id"] in ids]
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.jsonl").write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in docs))
    (out / "demo_heldout.yaml").write_text(
        f"task: demo_heldout\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {out / 'heldout.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n")
    rows = []
    for name in ("mle", "conditional"):
        for prefix in (True, False):
            t0 = time.perf_counter()
            doc = evaluate_model_dir(rundir.final_dir(demo / name), [str(out / "demo_heldout.yaml")],
                                     LMEvalSettings(sampling_prefix=prefix, batch_size=8))
            rows.append({"model": name, "sampling_prefix": prefix, "prefix": doc["prefix"],
                         "seconds": time.perf_counter() - t0, "docs": len(docs), **doc["tasks"]["demo_heldout"]})
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| model | prefix | bits/byte | word ppl | docs | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | `{r['prefix'] or '(none)'}` | {r['bits_per_byte']:.4f} | {r['word_perplexity']:.1f} "
              f"| {r['docs']} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
