"""The ``spa`` group (``conf/spa/default.yaml``), typed: what phf-spa's rounds read of it.

``phf.spa.rounds.run_spa`` binds it once with ``phf.settings.bind`` (from its ``_target_``) and passes it
down in place of the config; an unknown key is refused naming where it was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phf.settings import bind
from phf.spa.guards import StageAcceptance
from phf.spa.informative import PairSearch


@dataclass
class PromptSettings:
    """``spa.prompts``: the pool each stage draws new prompts from (``phf.spa.pairs.PromptPool``)."""

    mix: dict[str, float]  # share of each kind of prompt: eos, signatures, prefixes, file
    file: str | None = None  # a prompts file (phf/eval/prompts/ or a path), used when mix.file > 0
    prefix_lines: int = 2
    max_prompt_chars: int = 160
    max_docs: int = 400  # training documents mined for signatures and prefixes (validation split excluded)


@dataclass
class Guards:
    """``spa.guards``: phf's own guards (not in Kim et al.), off by default (``phf.spa.guards``)."""

    length_normalise: bool = False  # the implicit labeler's reward per response token
    accept: StageAcceptance = field(default_factory=StageAcceptance)

    def __post_init__(self):
        if not isinstance(self.accept, StageAcceptance):
            self.accept = bind(StageAcceptance, self.accept, "spa.guards.accept")


@dataclass
class SpaSettings:
    """``spa``: the starting model, the stages, and how pairs are drawn, labelled and trained on."""

    init_from: str  # the pretrained checkpoint (an HF directory with its tokenizer, e.g. RUN/final)
    stages: dict[str, dict]  # name -> {num_prompts, labeler, epochs, seed_fraction}, in order
    prompts: PromptSettings
    sampling: dict[str, Any]  # phf.spa.pairs.GenerationSettings without its seed (a stage's)
    train: dict[str, Any] = field(default_factory=dict)  # phf.spa.train_dpo.DPOSettings, a stage's seed and epochs on top
    implicit_beta: float | None = None  # β of the implicit-reward labeler; None = objective.beta
    score_prompt: bool = True  # the scorer sees prompt + response
    oracle: bool = False  # every stage labelled by the task scorer (phf.spa.oracle)
    pairs: PairSearch = field(default_factory=PairSearch)
    guards: Guards = field(default_factory=Guards)

    def __post_init__(self):
        if not isinstance(self.prompts, PromptSettings):
            self.prompts = bind(PromptSettings, self.prompts, "spa.prompts")
        if not isinstance(self.pairs, PairSearch):
            self.pairs = bind(PairSearch, self.pairs, "spa.pairs")
        if not isinstance(self.guards, Guards):
            self.guards = bind(Guards, self.guards, "spa.guards")
        self.stages = dict(self.stages or {})
        self.train = dict(self.train or {})

    @classmethod
    def from_config(cls, node) -> SpaSettings:
        return bind(cls, node, "spa")
