"""conf/experiment/: every file composes, and the paper's runs dry-run to the paper's tables."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from phf.train import train
from tests.conftest import CONF
from tests.experiments.conftest import DEMOS, EXPERIMENTS, OBJECTIVES, PAPER, compose_run, run_phf_train

# phf_paper.md §3.3: learning rate / effective batch size (sequences of 1024 tokens) per run.
PAPER_LR_EBS = {
    ("toxicity", "pretrain"): {"mle": (5e-4, 64), "filtering": (5e-4, 64), "conditional": (5e-4, 64),
                               "unlikelihood": (5e-4, 64), "rwr": (5e-4, 1024), "awr": (1e-3, 1024)},
    ("toxicity", "finetune"): {"mle": (5e-4, 64), "filtering": (5e-4, 64), "conditional": (5e-4, 64),
                               "unlikelihood": (5e-4, 64), "rwr": (5e-4, 512), "awr": (1e-3, 512)},
    ("pii", "pretrain"): {o: (5e-4, 64) for o in OBJECTIVES},
    ("pii", "finetune"): {"mle": (1e-4, 128), "filtering": (1e-4, 128), "conditional": (1e-4, 128),
                          "unlikelihood": (1e-4, 128), "rwr": (1e-4, 512), "awr": (1e-4, 512)},
    ("pep8", "pretrain"): {"mle": (8e-4, 64), "filtering": (8e-4, 64), "conditional": (8e-4, 64),
                           "unlikelihood": (8e-4, 64), "rwr": (1e-3, 64), "awr": (1e-3, 256)},
    # the original has a single PEP8 finetuning config (5e-4 / 64); phf uses it for every objective
    ("pep8", "finetune"): {o: (5e-4, 64) for o in OBJECTIVES},
}
# Tokens already seen at the finetuning start point (the MLE run's halfway checkpoint), §3.3.
START_TOKENS = {"toxicity": 1_661_599_744, "pii": 1_649_999_872, "pep8": 1_649_999_872}
# Steps the paper derives from the budget: (phase, start tokens, EBS) -> optimizer steps, §3.3.
PAPER_STEPS = {
    ("pretrain", 64): 50_354, ("pretrain", 256): 12_588, ("pretrain", 1024): 3_147,
    ("finetune-toxicity", 64): 25_000, ("finetune-toxicity", 512): 3_125,
    ("finetune-pii", 128): 12_588, ("finetune-pii", 512): 3_147,
    ("finetune-pep8", 64): 25_177,
}
CASES = [(t, p, o) for (t, p) in PAPER_LR_EBS for o in OBJECTIVES]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name, tmp_path):
    """`phf-train +experiment=NAME --cfg job` for every file in conf/experiment/ (whoever wrote it)."""
    # a shared piece (_paper: data=hf) names no task; the experiments that include it do
    task = ["task=pep8"] if name.startswith("_") else []
    cfg = compose_run([f"+experiment={name}", f"run_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", *task])
    assert OmegaConf.to_yaml(cfg)  # what --cfg job prints (unresolved)


@pytest.mark.parametrize("name", PAPER + DEMOS)
def test_experiment_resolves(name, tmp_path):
    """The paper's and the demo experiments resolve completely and their parts instantiate."""
    cfg = compose_run([f"+experiment={name}", "objective=mle", f"run_dir={tmp_path}",
                       f"cache_dir={tmp_path / 'cache'}"])
    if "finetune" in name:  # the MLE checkpoint is the one mandatory value; the dry run needs none
        cfg.paper.finetune_from = str(tmp_path / "ckpt")
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["objective"]["_target_"] == "phf.objectives.MLE"
    assert hasattr(instantiate(cfg.data.source), "iter_from")
    assert instantiate(cfg.task.segmenter)("a\nb")
    ev = cfg.task.eval
    assert ev.scenarios and all(s.num_samples > 0 and s.max_new_tokens > 0 for s in ev.scenarios.values())


@pytest.mark.parametrize("task, phase, objective", CASES, ids=[f"{t}-{p}-{o}" for t, p, o in CASES])
def test_paper_dry_run_matches_the_tables(task, phase, objective, tmp_path, capsys):
    cfg = compose_run([f"+experiment={task}_{phase}", f"objective={objective}", "trainer.dry_run=true",
                       f"run_dir={tmp_path / 'run'}"])
    out = train(cfg)
    printed = json.loads(capsys.readouterr().out)
    assert printed == out
    lr, ebs = PAPER_LR_EBS[task, phase][objective]
    start = START_TOKENS[task] if phase == "finetune" else 0
    key = ("pretrain" if phase == "pretrain" else f"finetune-{task}", ebs)
    assert (out["lr"], out["effective_batch_size"], out["block_size"]) == (lr, ebs, 1024)
    assert out["num_tokens"] == 3_300_000_000 and out["start_tokens"] == start
    assert out["tokens_per_step"] == ebs * 1024
    assert out["max_steps"] == PAPER_STEPS[key] == (3_300_000_000 - start) // (ebs * 1024)
    assert out["warmup_steps"] == -(-out["max_steps"] // 100)  # ceil(1%), as HF's warmup_ratio
    assert out["accum"] == ebs // cfg.trainer.batch_size
    assert out["objective"].lower() == {"unlikelihood": "unlikelihood"}.get(objective, objective)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", ["toxicity", "pii", "pep8"])
def test_paper_runs_share_the_setup(task, tmp_path):
    """GPT-2 small, 3.3B tokens, the paper's data and micro-batch; finetunes start from the MLE checkpoint."""
    pre = compose_run([f"+experiment={task}_pretrain", "objective=conditional", f"run_dir={tmp_path}"])
    ft = compose_run([f"+experiment={task}_finetune", "objective=conditional", f"run_dir={tmp_path}",
                      "paper.finetune_from=/ckpt/step_00025354"])
    for cfg in (pre, ft):
        assert cfg.task.name == task
        assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.block_size) == (12, 12, 768, 1024)
        assert cfg.data.source._target_ == "phf.data.sources.HFSource"
        assert cfg.trainer.batch_size == (16 if task == "pep8" else 8)
        assert cfg.data.shuffle_buffer == 20000
    names = list(pre.data.source.names)
    if task == "pep8":
        assert names == ["kejian/codeparrot-train-more-filter-3.3b-cleaned"]
        assert pre.tokenizer.name_or_path == "codeparrot/codeparrot-small" and pre.model.scale_attn_by_inverse_layer_idx
    else:
        assert pre.tokenizer.name_or_path == "gpt2-offline"  # the paper's tokenizer for prose
        prefix = {"toxicity": "detoxify", "pii": "pii"}[task]
        assert len(names) == 39 == len(set(names))
        assert names[0] == f"tomekkorbak/{prefix}-pile-chunk3-0-50000"
        assert names[-1] == f"tomekkorbak/{prefix}-pile-chunk3-1900000-1950000"
    assert pre.model.init_from is None and pre.trainer.data_state_from is None and pre.trainer.start_tokens == 0
    assert ft.model.init_from == ft.trainer.data_state_from == "/ckpt/step_00025354"
    # the MLE run checkpoints exactly at the finetuning start point
    mle = compose_run([f"+experiment={task}_pretrain", "objective=mle", f"run_dir={tmp_path}"])
    assert mle.trainer.checkpoint_every * mle.trainer.effective_batch_size * 1024 == START_TOKENS[task]
    assert mle.trainer.keep_checkpoints == 0


def test_finetune_needs_the_checkpoint(tmp_path):
    from omegaconf.errors import InterpolationToMissingValueError

    cfg = compose_run(["+experiment=pii_finetune", "objective=rwr", f"run_dir={tmp_path}"])
    with pytest.raises(InterpolationToMissingValueError, match="paper.finetune_from"):
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_command_line_beats_the_table(tmp_path):
    cfg = compose_run(["+experiment=toxicity_pretrain", "objective=awr", "trainer.lr=3e-4",
                       "trainer.effective_batch_size=256", f"run_dir={tmp_path}"])
    assert (cfg.trainer.lr, cfg.trainer.effective_batch_size, cfg.task.eval.every_steps) == (3e-4, 256, 16)


def test_objective_without_a_row_fails_clearly(tmp_path):
    from omegaconf.errors import InterpolationKeyError

    cfg = compose_run(["+experiment=pep8_pretrain", "objective=mle", f"run_dir={tmp_path}"])
    cfg.paper.objective = "my_plugin"
    with pytest.raises(InterpolationKeyError, match="per_objective.my_plugin"):
        _ = cfg.trainer.lr


@pytest.mark.parametrize("name", DEMOS)
def test_demo_experiments_are_offline_cpu_runs(name, tmp_path):
    cfg = compose_run([f"+experiment={name}", f"run_dir={tmp_path}"])
    assert cfg.task.name == "pii" and cfg.data.source._target_ == "phf.data.corpora.LocalPIISource"
    assert cfg.tokenizer._target_ == "phf.data.bpe.fit_bpe" and cfg.trainer.device == "cpu"
    assert cfg.model.n_layer <= 4 and cfg.model.block_size <= 256
    # the paper's protocol is the primary result; sentence-level sampling the secondary scenario beside it
    assert cfg.task.objectives.conditional.ban_aligned
    scenarios = cfg.task.eval.scenarios
    assert scenarios.unconditional.ban_aligned is True and scenarios.unconditional.prompts is None
    assert scenarios.unconditional_sentence_level.ban_aligned is False
    assert scenarios.unconditional_sentence_level.secondary_to == "unconditional"
    assert scenarios.unconditional.num_samples >= 512 and scenarios.unconditional_sentence_level.num_samples >= 256
    conditional = instantiate(compose_run([f"+experiment={name}", "objective=conditional", f"run_dir={tmp_path}"]).objective)
    banned = {name: conditional.scenario_banned_tokens(sc.get("ban_aligned")) for name, sc in scenarios.items()}
    assert banned["unconditional"] == ["<|aligned|>", "<|misaligned|>"]
    assert banned["unconditional_sentence_level"] == ["<|misaligned|>"]


def test_no_experiment_overrides_the_sampling_protocol():
    """The protocol is a scenario setting (task.eval.scenarios.<name>.ban_aligned), never an experiment's
    override of the objective (the demo once set conditional.ban_aligned: false for every scenario)."""
    for f in sorted((CONF / "experiment").glob("*.yaml")):
        assert "ban_aligned" not in f.read_text(), f


# -- the original's defaults in the paper configs (issue 17) ----------------------------------------------
@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_resolve_to_the_originals_settings(name, tmp_path):
    from phf.eval.red_team import load_prompts

    task, phase = name.split("_")
    ckpt = ["paper.finetune_from=/ckpt/step_00025177"] if phase == "finetune" else []
    cfg = compose_run([f"+experiment={name}", "objective=unlikelihood", f"run_dir={tmp_path}", *ckpt])
    # decode: transformers 4.17's batch_decode cleanup; attention: reorder_and_upcast_attn in every config
    assert cfg.task.eval.clean_up_tokenization_spaces is True
    assert cfg.model.reorder_and_upcast_attn is True and cfg.model.attn_implementation == "eager"
    # unlikelihood: the original's soft weight where its threshold was 0 (pii, pep8)
    objective = instantiate(cfg.objective)
    assert objective.soft is (task in ("pii", "pep8"))
    assert objective.threshold == {"toxicity": 0.00078, "pii": 0.0, "pep8": 0.0}[task]
    # finetuning: a fresh buffer from the MLE run's document position
    if phase == "finetune":
        assert cfg.trainer.data_state_buffers == "fresh"
        assert cfg.model.value_head is None  # AWR: a new head, zero-initialised (tests/test_finetune_start.py)
    # sampling lengths by the original's rule (max_length counts the padded prompt, min_length its tokens)
    scenarios = cfg.task.eval.scenarios
    uncond = scenarios.unconditional
    assert (uncond.max_length, uncond.min_length) == ((640, 10) if task == "pep8" else (128, 10))
    # the paper's protocol is the primary one; prose adds the sentence-level one, sampled by the same rule
    assert uncond.ban_aligned is (task != "pep8")
    if task != "pep8":
        secondary = scenarios.unconditional_sentence_level
        assert secondary.ban_aligned is False and secondary.secondary_to == "unconditional"
        assert (secondary.max_length, secondary.min_length) == (128, 10)
    if task == "pep8":
        functions = scenarios.functions
        assert (functions.max_length, functions.min_length, functions.prompt_draw) == (272, 10, "random")
        assert functions.score_prompt is True
        prompts = load_prompts(functions.prompts)
        assert len(prompts) == 52 and all(p.startswith("def ") and p.endswith(":") for p in prompts)


def test_non_paper_runs_keep_phfs_choices(tmp_path):
    cfg = compose_run(["objective=unlikelihood", f"run_dir={tmp_path}"])
    assert cfg.task.eval.clean_up_tokenization_spaces is False
    assert instantiate(cfg.objective).soft is False
    assert cfg.trainer.data_state_buffers == "fresh"
    assert "max_length" not in cfg.task.eval.scenarios.functions
    assert cfg.task.eval.scenarios.functions.prompts == "pep8_functions.jsonl"


def test_paper_options_switch_back_to_phfs_choices(tmp_path):
    cfg = compose_run(["+experiment=pep8_finetune", "objective=unlikelihood", f"run_dir={tmp_path}",
                       "paper.finetune_from=/ckpt", "task.objectives.unlikelihood.soft=false",
                       "task.eval.clean_up_tokenization_spaces=false", "trainer.data_state_buffers=restored",
                       "task.eval.scenarios.functions.max_length=null", "task.eval.scenarios.functions.min_length=null",
                       "task.eval.scenarios.functions.prompts=/data/functions_csnet.jsonl",
                       "model.attn_implementation=sdpa"])
    assert instantiate(cfg.objective).soft is False and cfg.model.attn_implementation == "sdpa"
    assert cfg.trainer.data_state_buffers == "restored"
    f = cfg.task.eval.scenarios.functions
    assert (f.max_length, f.min_length, f.max_new_tokens, f.prompts) == (None, None, 256, "/data/functions_csnet.jsonl")


def test_gpt2_small_builds_with_reorder_and_upcast_attn(tmp_path):
    import torch

    from phf.tokenizer import gpt2_tokenizer

    cfg = compose_run(["+experiment=toxicity_pretrain", "objective=mle", f"run_dir={tmp_path}", "model.n_layer=1",
                       "model.n_head=2", "model.n_embd=32", "model.block_size=32"])
    model = instantiate(cfg.model, tokenizer=gpt2_tokenizer(), objective=None, seed=0)
    assert model.config.reorder_and_upcast_attn is True
    assert model.config._attn_implementation == "eager"  # the only implementation that honours it
    calls = []
    attn = model.lm.transformer.h[0].attn
    real = attn._upcast_and_reordered_attn
    attn._upcast_and_reordered_attn = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    model(torch.tensor([[1, 2, 3]]))
    assert calls == [1]


@pytest.mark.parametrize("name", ["pep8_finetune", "toxicity_pretrain"])
def test_cfg_job_prints_the_originals_settings(name):
    """`phf-train +experiment=NAME objective=unlikelihood --cfg job --resolve`, read back as YAML."""
    ckpt = ["paper.finetune_from=/ckpt"] if "finetune" in name else []
    res = run_phf_train([f"+experiment={name}", "objective=unlikelihood", *ckpt, "--cfg", "job", "--resolve"],
                        timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = OmegaConf.create(res.stdout)
    pep8 = name.startswith("pep8")
    assert cfg.objective.soft is pep8 and cfg.model.reorder_and_upcast_attn is True
    assert cfg.model.attn_implementation == "eager"
    assert cfg.task.eval.clean_up_tokenization_spaces is True
    assert cfg.task.eval.scenarios.unconditional.max_length == (640 if pep8 else 128)
    if pep8:
        assert cfg.trainer.data_state_buffers == "fresh" and cfg.trainer.data_state_from == "/ckpt"
        assert cfg.task.eval.scenarios.functions.max_length == 272


@pytest.mark.parametrize("task, data", [("pep8", "local_pep8"), ("pii", "local_pii"), ("toxicity_profanity", "local_toxicity")])
def test_laptop_experiment_composes_for_every_task(task, data, tmp_path):
    """The shared CPU settings work on every task's local corpus, with the fitted tokenizer."""
    cfg = compose_run(["+experiment=laptop", f"task={task}", f"data={data}", f"run_dir={tmp_path}",
                       f"cache_dir={tmp_path / 'cache'}"])
    assert cfg.tokenizer._target_ == "phf.data.bpe.fit_bpe" and cfg.tokenizer.source == cfg.data.source
    assert cfg.trainer.device == "cpu" and cfg.task.eval.scenarios.unconditional.num_samples == 512
    assert hasattr(instantiate(cfg.data.source), "iter_from")


# -- the laptop sweeps (issue 19) ------------------------------------------------------------------------
LAPTOP = {"laptop_toxicity": ("toxicity_profanity", "phf.data.corpora.LocalToxicitySource"),
          "laptop_pii": ("pii", "phf.data.corpora.LocalPIISource"),
          "laptop_pep8": ("pep8", "phf.data.sources.LocalPythonSource")}
LAPTOP_TOKENS = 1500 * 8 * 128  # every laptop run: 1,500 steps of 8 × 128 tokens


def _laptop_tokens(cfg) -> int:
    return int(cfg.trainer.start_tokens) + cfg.trainer.max_steps * cfg.trainer.effective_batch_size * cfg.model.block_size


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("name", sorted(LAPTOP))
def test_laptop_sweeps_resolve_with_one_budget(name, objective, tmp_path):
    """`make laptop-<task>`: every objective resolves on the task's local corpus with the fitted BPE, offline
    on CPU, with the same token budget and the task's own objective hyperparameters."""
    task, source = LAPTOP[name]
    cfg = compose_run([f"+experiment={name}", f"objective={objective}", "seed=2", f"run_dir={tmp_path}",
                       f"cache_dir={tmp_path / 'cache'}"])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.task.name == task and cfg.data.source._target_ == source
    assert cfg.tokenizer._target_ == "phf.data.bpe.fit_bpe" and cfg.trainer.device == "cpu"
    assert _laptop_tokens(cfg) == LAPTOP_TOKENS and cfg.trainer.lr == 2e-3 and cfg.seed == 2
    scenarios = cfg.task.eval.scenarios
    assert scenarios.unconditional.num_samples == 512  # the headline comparison: >= 512 samples per run
    # prose: the paper's protocol (both control tokens banned) and the sentence-level one beside it; PEP8:
    # the paper's line-level protocol only
    assert scenarios.unconditional.ban_aligned is (task != "pep8")
    assert ("unconditional_sentence_level" in scenarios) is (task != "pep8")
    if task != "pep8":
        assert scenarios.unconditional_sentence_level.num_samples == 256
    if objective != "mle":  # the objective reads its hyperparameters from the task
        for key, value in cfg.task.objectives[objective].items():
            assert resolved["objective"][key] == value, (objective, key)


def test_laptop_toxicity_corpus_shows_the_behaviour_enough(tmp_path):
    """The toxicity corpus has the PII demo's settings (MLE must see enough abuse to learn to write it)."""
    tox = compose_run(["+experiment=laptop_toxicity", f"run_dir={tmp_path}"]).data.source
    pii = compose_run(["+experiment=laptop_pii", f"run_dir={tmp_path}"]).data.source
    for key in ("n_docs", "fraction", "max_injections", "max_chars", "content_coupling", "content_grain",
                "open_misaligned", "density"):
        assert tox[key] == pii[key], key
    assert (tox.n_docs, tox.fraction, tox.max_injections, tox.max_chars) == (3000, 0.6, 4, 1500)


def test_laptop_pii_is_the_demo_sweep_with_checkpoints(tmp_path):
    """laptop_pii trains exactly the demo sweep's runs; only the checkpoints (for the finetuning) differ."""
    lap = compose_run(["+experiment=laptop_pii", "objective=conditional", f"run_dir={tmp_path}"])
    demo = compose_run(["+experiment=demo_sweep", "objective=conditional", f"run_dir={tmp_path}"])
    assert lap.trainer.checkpoint_every == 375 and lap.trainer.keep_checkpoints == 0
    lap, demo = (OmegaConf.to_container(c, resolve=True) for c in (lap, demo))
    for key in ("checkpoint_every", "keep_checkpoints"):
        del lap["trainer"][key], demo["trainer"][key]
    assert lap == demo


def test_laptop_pii_finetune_continues_mles_halfway_checkpoint(tmp_path):
    """Fig. 5 at laptop scale: MLE's step-750 checkpoint + 750 steps of the objective = the from-scratch budget,
    on the data MLE would read next, with the from-scratch run's learning rate at step 750."""
    ckpt = str(tmp_path / "mle-seed1" / "checkpoints" / "step_00000750")
    cfg = compose_run(["+experiment=laptop_pii_finetune", "objective=conditional", f"run_dir={tmp_path}",
                       f"laptop.finetune_from={ckpt}"])
    assert cfg.model.init_from == ckpt and cfg.trainer.data_state_from == ckpt
    assert cfg.trainer.start_tokens == 750 * 1024 and _laptop_tokens(cfg) == LAPTOP_TOKENS
    scratch = compose_run(["+experiment=laptop_pii", "objective=conditional", f"run_dir={tmp_path}"])
    warmup = int(scratch.trainer.warmup_fraction * scratch.trainer.max_steps)
    lr_at_750 = scratch.trainer.lr * (scratch.trainer.max_steps - 750) / (scratch.trainer.max_steps - warmup)
    assert cfg.trainer.lr == pytest.approx(lr_at_750, rel=0.02)
    assert cfg.data == scratch.data and cfg.task == scratch.task and cfg.objective == scratch.objective
    with pytest.raises(Exception, match="finetune_from"):
        OmegaConf.to_container(compose_run(["+experiment=laptop_pii_finetune", f"run_dir={tmp_path}"]),
                               resolve=True, throw_on_missing=True)
