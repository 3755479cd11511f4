"""Measure the structure statistic (phf.data.corpus_stats) on real text and on local_pii's settings.

    OMP_NUM_THREADS=1 python experiments/corpus_structure/measure.py [NAME ...]   # all, or some rows

Each row composes phf-train's config from the overrides below (as ``phf-corpus-stats`` does), reads
the corpus, and computes the statistic from the task scorer's flags (segment score > the task's
conditional threshold, through the pipeline's segment → score path) and, for injected corpora, from
the ground truth. Content predictability (``content_kappa``) is given for two groupings: the
document's ``unit`` (package / README / package directory) and its ``kind`` (genre: for local prose
topics / metadata / docstring; for real text metadata / license / debian-copyright / changelog ...).
Real text rows also get the statistic per kind. Writes ``results/<name>.json`` and
``results/summary.md`` (the table in README.md). Scores are cached in ``$PHF_CACHE_DIR``;
the real text is regenerated there (``corpus_structure/real_text.jsonl``, by real_text.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
# machine-specific text (this machine's packages): regenerated, not committed
REAL = Path(os.environ.get("PHF_CACHE_DIR") or Path.home() / ".cache" / "phf") / "corpus_structure" / "real_text.jsonl"
PERSONAL = "scorer.entities=[EMAIL_ADDRESS,PHONE_NUMBER,CREDIT_CARD,IP_ADDRESS,US_SSN,IBAN_CODE]"
# the demo's corpus (conf/experiment/demo.yaml): 3000 documents of <= 1500 characters, 60% injected, 1..4 each
DEMO = ["task=pii", "data=local_pii", "data.source.n_docs=3000", "data.source.fraction=0.6",
        "data.source.max_injections=4", "data.source.max_chars=1500"]


TOX = ["task=toxicity_profanity", "data=local_toxicity", "data.source.n_docs=3000", "data.source.fraction=0.6",
       "data.source.max_injections=4", "data.source.max_chars=1500"]
#: the entity types presidio's pattern recognizers find reliably in phf's templates (not PERSON, ADDRESS)
DETECTED = "[EMAIL_ADDRESS,PHONE_NUMBER,IP_ADDRESS]"


def pii(coupling, opening, density=None, detected=False):
    return DEMO + [f"data.source.content_coupling={coupling}", f"data.source.open_misaligned={opening}",
                   f"data.source.density={'null' if density is None else density}",
                   f"data.source.opening_entities={DETECTED if detected else 'null'}"]


def _pii_rows() -> dict:
    rows = {}
    for c, p, d, det in [(0, 0, None, False), (0.5, 0, None, False), (1, 0, None, False), (0, 0.5, None, False),
                         (0, 1, None, False), (0, 1, None, True), (1, 1, None, False), (1, 1, None, True),
                         (0.5, 0.5, None, True), (0.7, 0.7, None, True), (1, 1, 0.1, True), (1, 1, 0.0, True),
                         (0, 0, 0.3, False), (0.63, 0.8, None, True), (0.63, 0.9, None, True),
                         (0.63, 1, None, True)]:
        name = f"pii_c{c}_p{p}" + ("" if d is None else f"_d{d}") + ("_det" if det else "")
        what = (f"local_pii (demo corpus): content_coupling {c}, open_misaligned {p}, density {d}"
                + (f", opening_entities {DETECTED}" if det else ""))
        rows[name] = (pii(c, p, d, det), what)
    return rows


#: name -> (overrides, description)
ROWS = {
    "real_pii": (["task=pii", "data=jsonl", f"data.source.path={REAL}", "data.source.meta_keys=[kind,unit]"],
                 "real text: package METADATA, licences, Debian copyright files, changelogs; presidio (task default, incl. URLs)"),
    "real_personal": (["task=pii", "data=jsonl", f"data.source.path={REAL}", "data.source.meta_keys=[kind,unit]",
                       PERSONAL], "the same, personal data only (e-mail, phone, card, IP, SSN, IBAN; no URLs)"),
    "prose_pii": (DEMO + ["data.source.fraction=0"],
                  "local prose (the demo corpus before injection): presidio (task default, incl. URLs)"),
    "prose_personal": (DEMO + ["data.source.fraction=0", PERSONAL], "the same, personal data only (no URLs)"),
    "stdlib_pep8": (["task=pep8", "data=local_pep8"], "the standard library, per line, pycodestyle"),
    **_pii_rows(),
    # the laptop toxicity corpus (conf/experiment/laptop_toxicity.yaml) scored with profanity-check
    "tox_c0_p0": (TOX + ["data.source.content_coupling=0", "data.source.open_misaligned=0"],
                  "local_toxicity (laptop corpus) independent; profanity-check (task=toxicity_profanity)"),
    "tox_c0.63_p1": (TOX + ["data.source.content_coupling=0.63", "data.source.open_misaligned=1"],
                     "local_toxicity: content_coupling 0.63, open_misaligned 1; profanity-check"),
}


def measure(name: str, overrides: list[str], what: str) -> dict:
    from phf.data.corpus_stats import (
        conditional_threshold,
        content_kappa,
        flags_from_scores,
        flags_from_truth,
        structure_stats,
    )
    from phf.data.pipeline import RunData
    from phf.entry import compose

    cfg = compose(["run_dir=.", *overrides])  # nothing is launched: no Hydra job directory
    run_data = RunData.from_config(cfg)
    data, threshold = run_data.data, conditional_threshold(cfg)
    t0 = time.perf_counter()
    result: dict = {"name": name, "what": what, "overrides": overrides}
    by_unit, used = flags_from_scores(run_data, threshold)
    has_kind = name != "stdlib_pep8"
    by_kind, _ = flags_from_scores(run_data, threshold, group="kind") if has_kind else (None, None)
    result["scored_with"] = used
    result["scores"] = structure_stats(by_unit)
    if by_kind:
        mis = [any(f) for _, f in by_kind]
        result["scores"]["content_kappa_kind"] = content_kappa([k for k, _ in by_kind], mis)
        kinds = sorted({k for k, _ in by_kind})
        result["scores_per_kind"] = {
            k: structure_stats([(u, f) for (u, f), (kk, _) in zip(by_unit, by_kind, strict=True) if kk == k])
            for k in kinds
        }
    if callable(getattr(data.source, "structure", None)) and not name.startswith("prose"):
        truth = flags_from_truth(data.source)
        result["settings"] = data.source.structure_settings
        result["truth"] = structure_stats(truth)
        kinds = [d.meta["kind"] for d in data.source.documents]
        result["truth"]["content_kappa_kind"] = content_kappa(kinds, [any(f) for _, f in truth])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _p(x) -> str:
    return "–" if x is None else f"{x['p']:.3f}"


def _r(x) -> str:
    if x is None:
        return "–"
    hi = "∞" if x["hi"] == float("inf") else f"{x['hi']:.2f}"
    return f"{x['ratio']:.2f} [{x['lo']:.2f}, {hi}]"


def _f(x) -> str:
    return "–" if x is None else f"{x:.2f}"


HEADER = ("| corpus | from | docs | misaligned docs | first seg. misaligned | P(later doc \\| first aligned) | "
          "P(later doc \\| first misaligned) | opening lift [95%] | P(later seg \\| first aligned) | "
          "P(later seg \\| first misaligned) | protocol ratio | density | κ unit | κ kind |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(name: str, source: str, s: dict) -> str:
    return (f"| {name} | {source} | {s['documents']} | {_p(s['doc_rate'])} | {_p(s['first_rate'])} | "
            f"{_p(s['later_doc|first_aligned'])} | {_p(s['later_doc|first_misaligned'])} | {_r(s['opening_lift'])} | "
            f"{_p(s['later_seg|first_aligned'])} | {_p(s['later_seg|first_misaligned'])} | {_f(s['protocol_ratio'])} | "
            f"{_f(s['density'])} | {_f(s['content_kappa'])} | {_f(s.get('content_kappa_kind'))} |")


def summary() -> str:
    lines = [HEADER]
    for name in ROWS:
        path = OUT / f"{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        if "truth" in r:
            lines.append(row(name, "truth", r["truth"]))
        lines.append(row(name, "scores", r["scores"]))
        for kind, s in r.get("scores_per_kind", {}).items():
            if name.startswith(("real", "prose")):
                lines.append(row(f"{name}: {kind}", "scores", s | {"content_kappa_kind": None}))
    return "\n".join(lines) + "\n"


def main(names: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    if not REAL.is_file():
        REAL.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(HERE / "real_text.py"), str(REAL)], check=True)
    for name in names or list(ROWS):
        overrides, what = ROWS[name]
        result = measure(name, overrides, what)
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{name}: {result['seconds']} s", flush=True)
    (OUT / "summary.md").write_text(summary())
    print((OUT / "summary.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
