"""The oracle arm of SPA (issue 30, item 2): the same stages with every pair labelled by the task scorer.

With ``spa.oracle=true`` each stage keeps its prompts, sizes, epochs and guards, but its ``labeler``
becomes ``scorer`` (and a hybrid's ``seed_fraction`` is dropped): the upper bound of self-labelling on the
same rounds, so that a failure of the implicit labeler can be told from a failure of DPO at this scale.
SPA's paper has no such arm (its reviewers asked for self-label agreement with gold labels; Kim et al.
2024); the per-round agreement of implicit labels with the scorer is logged either way
(``spa/pairs/implicit_agreement``). The scorer-labelled share of a stage otherwise comes from
``labeler: hybrid`` with ``seed_fraction`` (``phf.spa.pairs.scorer_labelled_mask``).
"""

from __future__ import annotations


def oracle_stages(stages: dict[str, dict], oracle: bool) -> dict[str, dict]:
    """``stages`` unchanged, or (``oracle``) a copy in which every stage is labelled by the scorer."""
    if not oracle:
        return stages
    return {name: {**{k: v for k, v in st.items() if k != "seed_fraction"}, "labeler": "scorer"}
            for name, st in stages.items()}


__all__ = ["oracle_stages"]
