"""``phf-corpus-stats``: how misalignment is structured across and within a corpus's documents.

    phf-corpus-stats task=pii data=local_pii                        # scores + ground truth
    phf-corpus-stats task=pep8 data=local_pep8 n=500 out=pep8.json  # scores only
    phf-corpus-stats task=pii data=jsonl data.source.path=F data.source.meta_keys=[unit]

Arguments are ``phf-train``'s Hydra overrides (``task=`` picks the segmenter, the scorer and the
threshold, ``data=`` the corpus), plus its own:

    n=N            the first N documents of the source (default 0 = all)
    from=W         scores (segment and score with the task's segmenter and scorer, the pipeline's own
                   path), truth (a corpus's ``structure.jsonl``: local_pii, local_toxicity) or both
                   (default: both where the corpus has a ground truth, else scores)
    group=KEY      what a document's *content unit* is: ``unit`` (default: the document's ``unit``
                   metadata, else :func:`~phf.data.corpora.prose.unit_of` of its ``origin``, else the
                   directory of a file id such as local_pep8's ``email/mime/text.py``) or any metadata key
    threshold=X    a segment is misaligned when its score > X (default: the task's conditional threshold,
                   ``task.objectives.conditional.threshold``: the segments conditional training tags
                   ``<|misaligned|>``)
    out=FILE       also write the statistics as JSON

Prints the statistic of :mod:`phf.data.corpus_stats` (defined there): the misaligned-document and
segment rates, P(a later segment is misaligned | the first is aligned / misaligned), the opening lift,
the reduction the paper's sampling protocol could give (``protocol_ratio``) and how predictable
misalignment is from a document's content unit (``content_kappa``), with Wilson intervals.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from phf.console import plain
from phf.data.corpus_stats import conditional_threshold, flags_from_scores, flags_from_truth, structure_stats

OWN = {"n": "0", "from": "", "group": "unit", "threshold": "", "out": ""}
FROM = ("scores", "truth", "both")


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(own options, Hydra overrides)."""
    own, overrides = dict(OWN), []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(plain(__doc__))
            sys.exit(0)
        key, eq, value = arg.partition("=")
        if eq and key in OWN:
            own[key] = value
        else:
            overrides.append(arg)
    if not own["n"].isdigit():
        raise SystemExit(f"phf-corpus-stats: n must be an integer >= 0, got {own['n']!r}")
    if own["from"] and own["from"] not in FROM:
        raise SystemExit(f"phf-corpus-stats: from must be one of {FROM}, got {own['from']!r}")
    if own["threshold"]:
        try:
            float(own["threshold"])
        except ValueError:
            raise SystemExit(f"phf-corpus-stats: threshold must be a number, got {own['threshold']!r}") from None
    return own, overrides


def _fmt(x) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, dict) and "ratio" in x:
        return f"{x['ratio']:.3g} [{x['lo']:.3g}, {x['hi']:.3g}]"
    if isinstance(x, dict):
        return f"{x['p']:.4f} [{x['lo']:.4f}, {x['hi']:.4f}] ({x['k']}/{x['n']})"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def readable(name: str, stats: dict) -> str:
    lines = [f"== {name} =="]
    lines += [f"  {k:<28} {_fmt(v)}" for k, v in stats.items() if k != "confidence"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from phf.data.pipeline import RunData, build_data
    from phf.entry import compose

    own, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = compose(["run_dir=.", *overrides], prog="phf-corpus-stats")  # nothing is launched: no Hydra job directory
    data = build_data(cfg.data)
    has_truth = callable(getattr(data.source, "structure", None))
    where = own["from"] or ("both" if has_truth else "scores")
    if where in ("truth", "both") and not has_truth:
        raise SystemExit(f"phf-corpus-stats: from={where}: the source {type(data.source).__name__} has no ground "
                         "truth (structure.jsonl); use from=scores")
    n = int(own["n"])
    result: dict = {"overrides": overrides, "n": n}
    if has_truth:
        result["settings"] = dict(getattr(data.source, "structure_settings", {}))
    if where in ("truth", "both"):
        result["truth"] = structure_stats(flags_from_truth(data.source, n))
        print(readable("ground truth (injected sentences)", result["truth"]))
    if where in ("scores", "both"):
        threshold = float(own["threshold"]) if own["threshold"] else conditional_threshold(cfg)
        flags, used = flags_from_scores(RunData.from_config(cfg, data=data), threshold, n, own["group"])
        result["scores"] = structure_stats(flags)
        result["scored_with"] = used
        print(readable(f"scores ({used['scorer']} > {used['threshold']:g}, {used['segmenter']})", result["scores"]))
    if own["out"]:
        Path(own["out"]).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
