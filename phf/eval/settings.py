"""The evaluation's settings: ``task.eval`` of every task config (``conf/task/*.yaml``), typed.

``Evaluation.from_config(cfg)`` builds it from a run's config with ``phf.settings.bind``: every key is a
field here, checked once (an unknown key or scenario setting is named, with where it was found); nothing downstream repeats a
default. ``EvalSetup.from_config(cfg)`` adds what an evaluation takes from the run's other groups; the entry
points (phf-train, phf-eval, phf-spa) build it once and pass it down in place of the config. The evaluation stays under ``task`` because its numbers are the task's (hit threshold,
prompts, scorer) and every override of it is spelled ``task.eval.…``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from phf.settings import bind

RESERVED = {"kl", "heldout", "heldout_clean", "red_team"}  # metric groups that are not scenarios


@dataclass
class Scenario:
    """One sampling scenario: ``num_samples`` samples from ``prompts`` (None = EOS and the objective's
    control prefix only), scored by the evaluation scorer.

    ``ban_aligned`` is the scenario's sampling protocol for objectives with control tokens (conditional
    training): true bans both control tokens, so only the prompt's ``<|aligned|>`` conditions the sample
    (the paper's protocol for toxicity and PII); false bans only ``<|misaligned|>``, so the model may write
    ``<|aligned|>`` before later sentences or lines (the paper's protocol for PEP8; sentence-level for
    prose); None = the objective's own ``ban_aligned``. Other objectives sample the same either way.
    ``title`` names the protocol in phf-report; ``secondary_to`` makes the scenario a secondary view of
    another one (phf-report shows it right after that one, e.g. sentence-level beside the paper's protocol).
    """

    num_samples: int
    max_new_tokens: int
    min_new_tokens: int = 0
    prompts: str | None = None  # a path, or a file of phf/eval/prompts/
    score_prompt: bool = False  # score prompt + continuation (PEP8 functions)
    max_length: int | None = None  # the original's length rule instead of max_new_tokens (SamplingSettings)
    min_length: int | None = None
    prompt_draw: str = "cycle"  # cycle | random
    ban_aligned: bool | None = None  # also ban the aligned control token (None: the objective's setting)
    title: str | None = None  # what phf-report calls the scenario (None: its name)
    secondary_to: str | None = None  # the scenario this one is a secondary protocol of (phf-report order)


@dataclass
class Capability:
    """Held-out loss over all and over aligned target tokens, and on clean held-out documents."""

    aligned_threshold: float = 0.0  # aligned target token: score <= this
    max_blocks: int = 16  # held-out blocks phf-eval scores
    batch_size: int = 8
    # clean held-out loss (phf.eval.heldout_clean): text tokens per scored window, documents (None: all
    # held-out ones), bootstrap resamples of its interval over documents
    clean_window_tokens: int = 96
    clean_max_docs: int | None = None
    resamples: int = 2000


@dataclass
class KL:
    """KL(p_ref || p_model) from samples of a reference model (off while ``reference`` is None, unless
    ``train_reference``)."""

    reference: str | None = None
    num_samples: int = 64
    max_new_tokens: int = 64
    batch_size: int = 16
    seed: int = 0
    cache_dir: str | None = None  # None = <cache_dir>/kl
    prefix_every_line: bool | None = None  # None = auto (conditional PEP8)
    # score the reference per task segment, as phf trained it; None = auto: on for the trained clean
    # reference (train_reference), off for a named reference (an external model reads whole text)
    reference_segments: bool | None = None
    # reference None and train_reference: MLE on the clean corpus, trained once and cached (phf.eval.reference)
    train_reference: bool = False
    reference_steps: int | None = None  # None = the run's optimizer steps
    reference_seed: int = 0
    on_model_samples: bool = True  # also KL(model || reference) on the model's own samples (kl_on_model_samples)


@dataclass
class Evaluation:
    """``task.eval``: sampling settings shared by the scenarios, the metrics' settings, the scenarios and
    the optional capability, KL and red-team blocks (conf/task/pep8.yaml documents each key)."""

    every_steps: int = 0
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    batch_size: int = 32
    seed: int = 0
    hit_threshold: float = 0.0
    expected_max_k: int = 25
    self_bleu_n: int = 5
    repetition_n: int = 4
    blank_run_lines: int = 4
    confidence: float = 0.95
    clean_up_tokenization_spaces: bool = False
    scorer: Any = None  # a scorer config (with _target_) or None = the training scorer
    scenarios: dict[str, Scenario] = field(default_factory=dict)  # a scenario set to null is switched off
    capability: Capability = field(default_factory=Capability)
    kl: KL = field(default_factory=KL)
    red_team: dict = field(default_factory=dict)  # phf.eval.red_team.RedTeamSettings + red_lm, prompts

    def __post_init__(self):
        bad = RESERVED.intersection(self.scenarios)
        if bad:
            raise ValueError(f"task.eval.scenarios may not be named {sorted(bad)} (reserved metric groups)")
        self.scenarios = {name: sc if isinstance(sc, Scenario) else bind(Scenario, sc, f"task.eval.scenarios.{name}")
                          for name, sc in (self.scenarios or {}).items()
                          if sc is not None}  # null: off (a config file cannot delete a key the task defines)
        for name, sc in self.scenarios.items():
            if sc.secondary_to is not None and sc.secondary_to not in self.scenarios:
                raise ValueError(f"task.eval.scenarios.{name}.secondary_to: no scenario {sc.secondary_to!r}; "
                                 f"known: {sorted(self.scenarios)}")
        if not isinstance(self.capability, Capability):
            self.capability = bind(Capability, self.capability, "task.eval.capability")
        if not isinstance(self.kl, KL):
            self.kl = bind(KL, self.kl, "task.eval.kl")
        self.red_team = dict(self.red_team or {})

    @classmethod
    def from_config(cls, cfg) -> Evaluation:
        """From a run's config (``cfg.task.eval``); the scorer node is kept as a config, not built."""
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        node = OmegaConf.select(cfg, "task.eval")
        if node is None:
            raise KeyError("the config has no task.eval block; add one to conf/task/<task>.yaml (see conf/task/pep8.yaml)")
        # the scorer stays a DictConfig with _target_ (instantiated by phf.scorers.build_scorer) or None
        return bind(cls, node, "task.eval", scorer=node.get("scorer"))


@dataclass
class EvalSetup:
    """What one evaluation needs of a run's config, built once at the entry point (``from_config``) and
    passed down in place of the config: ``task.eval`` typed, and what it takes from the other groups."""

    settings: Evaluation
    scorer: Any  # the evaluation scorer's config: task.eval.scorer, else the training scorer (`scorer`)
    segmenter: Any  # task.segmenter, built (a line-level control prefix goes per segment in KL); None without one
    kl_cache_dir: str | Path  # task.eval.kl.cache_dir, else <cache_dir>/kl
    #: the clean MLE reference's ``final/`` for KL when task.eval.kl.train_reference (and no reference is
    #: given): trained on the first call, then read from its cache (``phf.eval.reference.clean_reference``)
    train_reference: Callable[[], Path] | None = None

    @classmethod
    def from_config(cls, cfg) -> EvalSetup:
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        ev = Evaluation.from_config(cfg)
        node = OmegaConf.select(cfg, "task.segmenter")
        if node is not None:
            from hydra.utils import instantiate

            node = instantiate(node)
        kl_cache = ev.kl.cache_dir or Path(OmegaConf.select(cfg, "cache_dir") or "~/.cache/phf").expanduser() / "kl"
        train_reference = None
        if ev.kl.train_reference and not ev.kl.reference:
            def train_reference(cfg=cfg, kl=ev.kl):
                # the whole config: the reference's own training config is derived from it and hashed for its
                # cache key (phf.eval.reference.reference_config, reference_key)
                from phf.eval.reference import clean_reference

                return clean_reference(cfg, kl)
        return cls(ev, ev.scorer or OmegaConf.select(cfg, "scorer"), node, kl_cache, train_reference)
