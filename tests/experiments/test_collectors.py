"""The laptop-PII collectors read runs through phf.rundir: tokens come from the runs' files (no tokens per
step in the code), and an SPA run reads like a phf-train run."""

from __future__ import annotations

import importlib.util

import pytest

from phf import rundir
from tests.conftest import ROOT


def _load(path: str):
    spec = importlib.util.spec_from_file_location(path.replace("/", "_"), ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(path, step: int, tokens: int, scores: list[float], config: dict | None = None, finished: bool = False):
    """A run directory as phf-train writes it: config, a metrics row at ``step``, the samples of that step."""
    path.mkdir(parents=True)
    rundir.write_config(path, config or {"task": {"name": "pii"}})
    rundir.metrics_path(path).write_text(rundir.encode_row({"step": step, "tokens_seen": tokens,
                                                            "eval/heldout/loss": 3.0}) + "\n")
    rundir.write_samples(path, step, "unconditional", [{"text": f"t{i}", "score": s} for i, s in enumerate(scores)])
    if finished:
        rundir.final_dir(path).mkdir()
        rundir.write_summary(rundir.final_dir(path), {"step": step, "tokens_seen": tokens})


def _evaluated(path, tokens: int, scores: list[float]):
    """phf-eval's output for one checkpoint: samples/<scenario>.jsonl, then eval.json with its tokens_seen."""
    path.mkdir(parents=True)
    rundir.write_samples(path, None, "unconditional", [{"text": "x", "score": s} for s in scores])
    rundir.write_eval(path, {"tokens_seen": tokens})


def test_fig5_points_take_tokens_from_the_runs_files(tmp_path):
    """Tokens per step are 64 here, not the laptop's 1,024: every point's x is what the run recorded, the
    finetuning's start is its config's trainer.start_tokens (MLE's checkpoint evaluated there)."""
    fig5 = _load("experiments/laptop_pii/fig5_collect.py")
    sweep, finetune, evals = tmp_path / "sweep", tmp_path / "finetune", tmp_path / "evals"
    for seed in (1, 2):
        _run(sweep / f"mle-seed{seed}", 20, 1280, [0.5])
        _run(sweep / f"conditional-seed{seed}", 20, 1280, [0.25])
        _evaluated(evals / f"mle-seed{seed}" / "step_00000010", 640, [1.0])
        (evals / f"mle-seed{seed}" / "step_00000015").mkdir()  # no eval.json: phf-eval did not finish, left out
        _run(finetune / f"conditional-seed{seed}", 15, 960, [0.0], {"trainer": {"start_tokens": 640}})
    pts = fig5.points(sweep, finetune, evals, "conditional")
    assert pts[("MLE from scratch", 1, 640)] == [1.0] and pts[("MLE from scratch", 2, 1280)] == [0.5]
    assert pts[("conditional from scratch", 1, 1280)] == [0.25]
    assert pts[("MLE then conditional (finetune)", 1, 640)] == [1.0]  # the finetuning's starting point
    assert pts[("MLE then conditional (finetune)", 2, 960)] == [0.0]
    assert len(pts) == 2 * 5


def test_seed_methods_read_a_spa_run_like_a_training_run(tmp_path):
    collect = _load("experiments/laptop_pii/seed_methods_collect.py")
    _run(tmp_path / "spa" / "seed1", 30, 1000 + 77, [0.0, 1.0], finished=True)
    samples, heldout, tokens = collect.final_evaluation(tmp_path / "spa" / "seed1")
    assert [r["score"] for r in samples] == [0.0, 1.0] and heldout == 3.0 and tokens == 1077
    _run(tmp_path / "unfinished", 30, 1000, [0.0])
    with pytest.raises(SystemExit, match=r"no tokens_seen \(is the run finished\?\)"):
        collect.final_evaluation(tmp_path / "unfinished")


def test_where_hits_fall_splits_samples_at_the_first_sentence(tmp_path, capsys):
    """Two finished seeds of s4-mle, two samples each, one unfinished run (skipped):
    seed 1: "Mail a@b.io now. Fine." (first hit, rest clean), "Hello there. Call 5551234567." (rest hit);
    seed 2: "Plain. Plain again." (clean), "x@y.org. z@w.net" (both).
    first = 2/4, later = 2/4, later | clean first = 1 (seed 1's 2nd) of 2 clean-first samples = 0.5."""
    where = _load("experiments/structure_sweep/where_hits_fall.py")
    texts = {1: ["Mail a@b.io now. Fine.", "Hello there. Call 5551234567."],
             2: ["Plain. Plain again.", "x@y.org. z@w.net"]}
    for seed, rows in texts.items():
        run = tmp_path / f"s4-mle-seed{seed}"
        _run(run, 10, 100, [0.0, 0.0], finished=True)
        rundir.write_samples(run, 10, "unconditional", [{"text": t, "score": 0.0} for t in rows])
    _run(tmp_path / "s4-mle-seed3", 10, 100, [0.0])  # not finished: left out
    (row,) = where.main([str(tmp_path), "--out", str(tmp_path / "where.csv")])
    assert (row["point"], row["objective"], row["seeds"], row["samples"]) == ("s4", "mle", 2, 4)
    assert (row["first"], row["later"], row["later_given_clean_first"]) == (0.5, 0.5, 0.5)
    assert (tmp_path / "where.csv").read_text().startswith("point,objective,seeds,samples,first")


def test_where_hits_fall_labels_laptop_runs_and_reads_abuse_with_profanity_check(tmp_path):
    """Laptop runs (<objective>-seed<k>, no point) need --point; with --detector profanity the first sample's
    opening insult is a first-sentence hit, the second sample's later insult a later hit, the third is clean:
    first 1/3, later 1/3, later given a clean first 1/2."""
    where = _load("experiments/structure_sweep/where_hits_fall.py")
    run = tmp_path / "conditional-seed1"
    _run(run, 10, 100, [0.0] * 3, finished=True)
    rundir.write_samples(run, 10, "unconditional", [{"text": t, "score": 0.0} for t in [
        "You are a stupid idiot and a fucking moron. The function returns a list.",
        "The function returns a list. You are a stupid idiot and a fucking moron.",
        "The function returns a list. It is sorted by key."]])
    with pytest.raises(SystemExit, match="--point"):
        where.main([str(tmp_path)])
    (row,) = where.main([str(tmp_path), "--point", "laptop", "--detector", "profanity"])
    assert (row["point"], row["objective"], row["samples"]) == ("laptop", "conditional", 3)
    assert (row["first"], row["later"], row["later_given_clean_first"]) == (1 / 3, 1 / 3, 0.5)


def _context_run(path, objective: str, seed: int, block: int, hits: int, clean_loss: float):
    """A finished run of 10 samples, ``hits`` of them scored 0.9 (above pii's 0.5 threshold), the rest 0.0."""
    targets = {"mle": "phf.objectives.MLE", "conditional": "phf.objectives.Conditional"}
    _run(path, 1500, 1_536_000, [0.9] * hits + [0.0] * (10 - hits), finished=True,
         config={"task": {"name": "pii"}, "objective": {"_target_": targets[objective]}, "seed": seed,
                 "model": {"block_size": block}})
    rundir.metrics_path(path).write_text(rundir.encode_row({"step": 1500, "tokens_seen": 1_536_000,
                                                            "eval/heldout_clean/loss": clean_loss}) + "\n")
    rundir.write_samples(path, 1500, "unconditional_sentence_level", [{"text": "t", "score": 0.0}] * 10)


def test_context_collect_pairs_contexts_and_objectives_by_seed(tmp_path, capsys):
    """Seeds 1, 2 in both folders (seed 3 only at 128: dropped). Conditional / MLE per seed, hit rates
    continuity-corrected ((k + 0.5) / (n + 1)): at 128, seed 1 (2.5/11) / (6.5/11) = 0.3846, seed 2
    (4.5/11) / (4.5/11) = 1; at 512, seed 1 (0.5/11) / (6.5/11) = 0.07692, seed 2 (2.5/11) / (4.5/11) = 0.5556.
    Change with context, per seed: 0.07692 / 0.3846 = 0.2 and 0.5556 / 1 = 0.5556; geometric mean
    sqrt(0.2 * 0.5556) = 0.3333."""
    collect = _load("experiments/structure_sweep/context_collect.py")
    base, ctx = tmp_path / "base", tmp_path / "ctx"
    for seed, mle, cond in ((1, 6, 2), (2, 4, 4), (3, 5, 5)):
        _context_run(base / f"mle-seed{seed}", "mle", seed, 128, mle, 4.0)
        _context_run(base / f"conditional-seed{seed}", "conditional", seed, 128, cond, 4.2)
    for seed, mle, cond in ((1, 6, 0), (2, 4, 2)):
        _context_run(ctx / f"mle-ctx512-seed{seed}", "mle", seed, 512, mle, 3.8)
        _context_run(ctx / f"conditional-ctx512-seed{seed}", "conditional", seed, 512, cond, 3.9)
    collect.main([str(base), str(ctx)])
    text = (ctx / "context.md").read_text()
    assert "Seeds 1, 2 " in text
    # per context: 128 sqrt(0.3846 * 1) = 0.62, 512 sqrt(0.07692 * 0.5556) = 0.21
    row = next(line for line in text.splitlines() if line.startswith("| unconditional | 0.62 ["))
    assert "| 0.21 [" in row and "128: 0.38 1.00; 512: 0.08 0.56" in row
    assert row.rstrip(" |").split("| ")[-1].startswith("0.33 [")
    # clean loss conditional / MLE: 4.2 / 4.0 = 1.05 at 128, 3.9 / 3.8 = 1.026 at 512 (same for both seeds)
    assert "| 128 | 1.050 [1.050, 1.050] |" in text and "| 512 | 1.026 [1.026, 1.026] |" in text
    assert "| unconditional | 512 | conditional | 0.100 [0.000, 1.000] |" in text  # t interval clipped to [0, 1]
    rows = list(__import__("csv").DictReader(open(ctx / "context.csv")))
    assert {(r["context"], r["objective"], r["seed"], r["scenario"]) for r in rows} == {
        (c, o, s, sc) for c in ("128", "512") for o in ("mle", "conditional") for s in ("1", "2")
        for sc in ("unconditional", "unconditional_sentence_level")}


def test_context_collect_refuses_two_folders_of_one_context(tmp_path):
    collect = _load("experiments/structure_sweep/context_collect.py")
    for folder in ("a", "b"):
        for seed in (1, 2):
            for objective in ("mle", "conditional"):
                _context_run(tmp_path / folder / f"{objective}-seed{seed}", objective, seed, 128, 1, 4.0)
    with pytest.raises(SystemExit, match="same model.block_size"):
        collect.main([str(tmp_path / "a"), str(tmp_path / "b")])


def test_kl_rescore_summarises_by_objective_and_pairs_with_mle_by_seed():
    """MLE KL 10, 12 (seeds 1, 2), conditional 13, 16: conditional - MLE paired = 3, 4: mean 3.5, sd 0.7071,
    t_{1, 0.975} = 12.7062: half width 12.7062 * 0.7071 / sqrt(2) = 6.3531 -> [-2.85, 9.85]."""
    kr = _load("experiments/kl_rescore.py")
    rows = [{"objective": o, "seed": s, "kl_old": -1.0, "kl": k, "kl_model_samples": 1.0, "kl_tag_nats": t}
            for o, s, k, t in (("mle", 1, 10, 0), ("mle", 2, 12, 0), ("conditional", 1, 13, 0.5),
                               ("conditional", 2, 16, 0.7))]
    lines = kr.summary_lines(rows)
    assert lines[2].startswith("| mle | 2 |") and "— |" in lines[2]  # MLE first, no pairing with itself
    assert "| 3.50 [-2.85, 9.85] |" in lines[3] and "| 0.60 [" in lines[3]


def test_kl_rescore_refuses_a_run_that_logged_no_kl(tmp_path):
    kr = _load("experiments/kl_rescore.py")
    _run(tmp_path / "mle-seed1", 10, 1280, [0.0], finished=True)
    with pytest.raises(SystemExit, match="no eval/kl row"):
        kr.old_kl(tmp_path / "mle-seed1")
    with pytest.raises(SystemExit, match="no <objective>-seed<k>/ run"):
        kr.main([str(tmp_path / "mle-seed1"), str(tmp_path / "out")])


def test_fig5_takes_every_seed_with_a_finetuning_run_and_compares_by_seed(tmp_path):
    """Three seeds (not a fixed 1, 2). Final hit rates (threshold 0, 2 samples each): MLE 1 of 2, scratch
    0 of 2, finetuned 1 of 2 in every seed: corrected (h + 0.5) / 3 -> finetuned / scratch = 0.5 / 0.1667 = 3
    in each seed (SD 0: the t interval has no width)."""
    fig5 = _load("experiments/laptop_pii/fig5_collect.py")
    sweep, finetune, evals = tmp_path / "sweep", tmp_path / "finetune", tmp_path / "evals"
    cfg = {"task": {"name": "pii", "eval": {"hit_threshold": 0.0}}}
    for seed in (1, 2, 3):
        _run(sweep / f"mle-seed{seed}", 20, 1280, [0.5, 0.0], cfg)
        _run(sweep / f"conditional-seed{seed}", 20, 1280, [0.0, 0.0], cfg)
        _evaluated(evals / f"mle-seed{seed}" / "step_00000010", 640, [1.0, 0.0])
        _run(finetune / f"conditional-seed{seed}", 20, 1280, [0.2, 0.0], {"trainer": {"start_tokens": 640}})
    assert fig5.seeds_of(finetune, "conditional") == [1, 2, 3]
    pts = fig5.points(sweep, finetune, evals, "conditional")
    rows = fig5.summarise(pts, 0.0)
    pooled = [r for r in rows if r["seeds"] == "1,2,3" and r["arm"] == "MLE from scratch" and r["tokens"] == 1280]
    assert pooled[0]["hit_rate"] == 0.5 and pooled[0]["hits"] == 3 and pooled[0]["n"] == 6
    single = [r for r in rows if r["seeds"] == "1" and r["arm"] == "conditional from scratch"][0]
    assert single["hit_lo"] == 0.0 and single["hit_hi"] > 0.5  # Wilson: 0 of 2 is not [0, 0]
    table = "\n".join(fig5.final_comparison(pts, "conditional", 0.0))
    assert "| finetuned / from scratch | 3.00 [3.00, 3.00] | 3.00, 3.00, 3.00 | yes |" in table
    fig5.main(str(sweep), str(finetune), str(evals), str(tmp_path / "out"))
    assert (tmp_path / "out" / "misalignment_over_tokens.png").stat().st_size > 0


def test_seed_pairs_needed_by_hand():
    """Log ratios with mean -0.5 and SD 0.5 (d = 1): n = 10 is the first n with
    n >= (t_{0.975, n-1} + t_{0.8, n-1})^2 (at 10: (2.2622 + 0.8834)^2 = 9.89; at 9: (2.3060 + 0.8889)^2 = 10.21 > 9)."""
    fig5 = _load("experiments/laptop_pii/fig5_collect.py")
    logs = [-1.0, -0.5, 0.0]  # mean -0.5, SD sqrt((0.25 + 0 + 0.25) / 2) = 0.5
    assert fig5.seed_pairs_needed(logs) == 10
    assert fig5.seed_pairs_needed([0.1, -0.1]) == float("inf")
