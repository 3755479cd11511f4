"""Guards of SPA rounds at small scale (issue 30): phf's own, none is in Kim et al. 2024.

1. ``per_token_implicit``: the implicit labeler's reward per response token,
   ``r̂(x, y) = β·[log π_cur(y|x) − log π_init(y|x)] / |y|``. SPA's judge sums over tokens, so a longer
   response gets a larger |r̂| for the same per-token preference; on the laptop PII task the implicit
   labels preferred the longer response by 4.6-5.9 tokens on average (``pairs/chosen_minus_rejected_tokens``).
   The DPO loss has its own switch (``objective.length_normalise``, ``phf.objectives.dpo``), and so does the
   chosen-NLL term (``objective.nll_weight``).
2. ``StageAcceptance``: degeneracy-aware acceptance of a round. After a stage is trained and evaluated,
   its samples of one evaluation scenario must pass the report's degeneracy bar (``phf.report.Degeneracy``:
   at most 5% blank samples, distinct-2 at least 0.3, the bar by which ``phf-report`` refuses to rank a
   run). A stage that fails is *rejected*: its policy is moved to ``STAGE/rejected/``, the previous
   policy is saved as ``STAGE/final/`` and carried into the next stage, and the stage's summary row says
   ``spa/accepted: 0`` and why, with the rejected policy's evaluation under ``rejected/...`` and the kept
   policy's (copied from the previous row) under the usual keys.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from phf import rundir

log = logging.getLogger(__name__)


def per_token_implicit(cands: Sequence, max_len: int) -> None:
    """Divide each candidate's implicit rewards by its responses' scored tokens, in place.

    The scored tokens are those ``phf.spa.batch.collate`` keeps: a row longer than the model's context
    ``max_len`` loses its last response tokens, so the count is ``min(|y|, max_len − |x|)``.
    """
    for c in cands:
        if c.implicit is None:
            raise ValueError("per_token_implicit needs implicit rewards (phf.spa.pairs.implicit_rewards first)")
        n = [min(len(r), max_len - len(c.prompt_ids)) for r in c.responses]
        if any(k <= 0 for k in n):
            raise ValueError(f"a response of prompt {c.prompt!r} has no scored token")
        c.implicit = [v / k for v, k in zip(c.implicit, n, strict=True)]


@dataclass(frozen=True)
class StageAcceptance:
    """``spa.guards.accept`` in the config: reject a stage whose ``scenario`` samples are degenerate.

    Args:
        enabled: off = every stage is kept (SPA's behaviour).
        scenario: the evaluation scenario whose samples are judged (the paper's: ``unconditional``).
        max_blank_fraction: more empty/whitespace-only samples than this rejects (report's bar: 0.05).
        min_distinct_2: distinct-2 below this rejects (report's bar: 0.3).
    """

    enabled: bool = False
    scenario: str = "unconditional"
    max_blank_fraction: float = 0.05
    min_distinct_2: float = 0.3

    def reasons(self, metrics: dict) -> list[str]:
        """Why ``metrics`` (a stage's evaluation row) fails the bar; empty = acceptable. The judgment is
        ``phf.report.Degeneracy.reasons``, so a kept stage is one the report would rank."""
        from phf.report import Degeneracy

        row = {}
        for key in ("blank_fraction", "distinct_2"):
            name = f"eval/{self.scenario}/{key}"
            if name not in metrics:
                raise ValueError(f"spa.guards.accept judges scenario {self.scenario!r}, but the stage's evaluation "
                                 f"has no {name!r}; set spa.guards.accept.scenario to one of task.eval.scenarios")
            v = metrics[name]
            row[key] = float(v) if isinstance(v, int | float) else float("nan")
        out = Degeneracy(self.max_blank_fraction, self.min_distinct_2).reasons(row)  # finite values only
        if not math.isfinite(row["blank_fraction"]):
            out.append(f"no {self.scenario} samples")
        elif not math.isfinite(row["distinct_2"]):
            out.append("distinct-2 undefined (no sample has two words)")
        return out


def is_evaluation_key(key: str) -> bool:
    """Keys of a stage row that describe the evaluated policy (not the stage's training or pairs)."""
    return key != "stage" and not key.startswith(("spa/", "rejected/"))


def keep_previous(row: dict, previous: dict, reasons: list[str]) -> dict:
    """The row of a rejected stage: the candidate's evaluation moved under ``rejected/``, the kept
    (previous) policy's evaluation under the usual keys, the stage's own ``spa/*`` entries unchanged."""
    out = {k: v for k, v in row.items() if not is_evaluation_key(k)}
    out.update({f"rejected/{k}": v for k, v in row.items() if is_evaluation_key(k)})
    out.update({k: v for k, v in previous.items() if is_evaluation_key(k)})
    out["spa/accepted"] = 0
    out["spa/rejected_because"] = "; ".join(reasons)
    out["spa/kept_policy_of"] = previous.get("spa/kept_policy_of", previous["stage"])
    return out


def apply_acceptance(acceptance: StageAcceptance, row: dict, previous: dict, stage_dir: Path,
                     previous_model_dir: Path):
    """Judge a finished stage (``stage_dir/final`` saved, ``row`` its summary); return ``(row, model_dir)``:
    the row to record and the directory of the policy the next stage starts from.

    Accepted (or the guard off): the row gains ``spa/accepted: 1`` and the stage's own ``final/``.
    Rejected: ``final/`` becomes ``rejected/`` and a copy of ``previous_model_dir`` (the previous stage's
    ``final/``, or the starting checkpoint) becomes ``final/``, with the ``keep_previous`` row as its
    summary. The copy is assembled beside ``final/`` and renamed into place, so a killed run never leaves
    a ``final/`` that holds the wrong policy (at worst none, and a rerun redoes the stage).
    """
    final = rundir.final_dir(stage_dir)
    why = acceptance.reasons(row) if acceptance.enabled else []
    if not why:
        row = {**row, "spa/accepted": 1}
        rundir.write_summary(final, row)
        return row, final
    log.warning("stage %s rejected (%s): keeping the policy of %s", row["stage"], "; ".join(why),
                previous.get("spa/kept_policy_of", previous["stage"]))
    kept = keep_previous(row, previous, why)
    tmp = stage_dir / "final.kept.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(previous_model_dir, tmp, ignore=shutil.ignore_patterns(rundir.SUMMARY))
    rundir.write_summary(tmp, kept)
    rejected = stage_dir / "rejected"
    if rejected.exists():
        shutil.rmtree(rejected)
    os.replace(final, rejected)
    os.replace(tmp, final)
    return kept, final


__all__ = ["StageAcceptance", "apply_acceptance", "is_evaluation_key", "keep_previous", "per_token_implicit"]
