"""The structure sweep (issue 24, item 4): its points compose to the intended corpus settings, and the
collector (experiments/structure_sweep/collect.py) turns run directories in phf-report's formats into the
CSV and the plot with phf-report's seeds-as-unit numbers and paired ratios."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from phf.eval.compare import corrected_rate, paired_ratio
from tests.conftest import CONF, ROOT
from tests.experiments.conftest import compose_run

DETECTED = ["EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS"]
POINTS = sorted(p.stem for p in (CONF / "structure").glob("*.yaml"))


def _compose(tmp_path, *overrides):
    return compose_run(["+experiment=structure_sweep", "objective=mle", f"run_dir={tmp_path}",
                        f"cache_dir={tmp_path / 'cache'}", *overrides])


@pytest.mark.parametrize("point", POINTS)
def test_point_sets_the_corpus_structure(point, tmp_path):
    """Each point composes on the demo's settings and its structure lands in data.source (resolved)."""
    cfg = _compose(tmp_path, f"structure={point}")
    file = OmegaConf.load(CONF / "structure" / f"{point}.yaml")
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    assert cfg.structure.name == point
    for key in ("content_coupling", "open_misaligned", "content_grain", "density", "opening_entities"):
        assert source[key] == file[key], key
    # the demo's corpus and task, untouched
    assert cfg.task.name == "pii" and source["_target_"] == "phf.data.corpora.LocalPIISource"
    assert (source["n_docs"], source["fraction"], source["max_injections"], source["max_chars"]) == (3000, 0.6, 4, 1500)
    assert cfg.trainer.max_steps == 1500 and cfg.task.eval.kl.train_reference is True
    src = instantiate(cfg.data.source)
    assert src.structure_settings == {
        k: source[k] for k in ("content_coupling", "open_misaligned", "density", "content_grain", "opening_entities")}


def test_points_run_from_independent_to_decided(tmp_path):
    """s0 = independent (0, 0, null, null); s4 = content and opening decide (1, 1, detected openings); in
    between c and p never decrease, and openings, once restricted to detected types, stay so. s5 (the
    demo's corpus) is s4 with package-level carrier groups and density 0.3."""
    assert POINTS == ["s0", "s1", "s2", "s3", "s4", "s5"]
    s5 = OmegaConf.to_container(_compose(tmp_path, "structure=s5").data.source, resolve=True)
    assert (s5["content_grain"], s5["density"]) == ("package", 0.3)
    src = [OmegaConf.to_container(_compose(tmp_path, f"structure={p}").data.source, resolve=True) for p in POINTS[:5]]
    assert all(s["content_grain"] == "unit" for s in src)
    assert [(s["content_coupling"], s["open_misaligned"], s["density"], s["opening_entities"]) for s in (src[0], src[-1])] \
        == [(0.0, 0.0, None, None), (1.0, 1.0, None, DETECTED)]
    for a, b in zip(src, src[1:], strict=False):
        assert b["content_coupling"] >= a["content_coupling"] and b["open_misaligned"] > a["open_misaligned"]
        assert a["opening_entities"] is None or b["opening_entities"] == a["opening_entities"]
    assert all(s["density"] is None for s in src)


def test_sweep_directories_and_drop_override(tmp_path):
    """Job directories name the point, objective and seed; the drop lever reaches the conditional objective."""
    from hydra.core.hydra_config import HydraConfig

    from phf.entry import compose

    subdir = ("${hydra:runtime.choices.structure}-conditional-drop${task.objectives.conditional.drop_token_fraction}"
              "-seed${seed}")  # the Makefile's structure-drop
    main = compose(["+experiment=structure_sweep", "structure=s2", "objective=mle", "seed=3"],
                   return_hydra_config=True)
    drop = compose(["+experiment=structure_sweep", "structure=s4", "objective=conditional", "seed=2",
                    "task.objectives.conditional.drop_token_fraction=0.1", f"hydra.sweep.subdir={subdir}"],
                   return_hydra_config=True)
    HydraConfig.instance().set_config(main)
    assert main.hydra.sweep.subdir == "s2-mle-seed3"
    HydraConfig.instance().set_config(drop)
    assert drop.hydra.sweep.subdir == "s4-conditional-drop0.1-seed2"
    assert drop.objective.drop_token_fraction == 0.1


# -- the collector on fake runs ------------------------------------------------------------------------
def _collector():
    spec = importlib.util.spec_from_file_location("structure_collect", ROOT / "experiments/structure_sweep/collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


N = 512  # primary samples per run
N2 = 256  # secondary
TARGETS = {"mle": "phf.objectives.MLE", "filtering": "phf.objectives.Filtering",
           "conditional": "phf.objectives.Conditional"}
RATIOS = {"s0": 0.91, "s4": 0.17}  # the fake corpora's protocol ratios


def fake_hits(point: str, objective: str, seed: int, drop: float) -> tuple[int, int]:
    """(primary hits of 512, secondary hits of 256): MLE ~ 200, filtering 0.8 × MLE, conditional
    protocol ratio × MLE under the paper's protocol (× 0.5 more at drop 0.1) and ~ 3 hits sentence-level."""
    mle = 190 + 10 * seed
    if objective == "mle":
        return mle, mle // 2
    if objective == "filtering":
        return int(0.8 * mle) - seed, (int(0.8 * mle) - seed) // 2
    primary = int(RATIOS[point] * mle * (0.5 if drop == 0.1 else 1.0)) + seed
    return primary, seed + 2


def fake_run(root, point: str, objective: str, seed: int, drop: float = 0.01, conf: dict | None = None):
    """A run directory in the formats phf-report reads (as tests/eval/test_report.py fakes them)."""
    structure = conf or OmegaConf.to_container(OmegaConf.load(CONF / "structure" / f"{point}.yaml"))
    run = root / (f"{point}-{objective}-seed{seed}" if drop == 0.01 else f"{point}-{objective}-drop{drop}-seed{seed}")
    run.mkdir(parents=True)
    cfg = {"seed": seed, "structure": structure,
           "task": {"name": "pii", "objectives": {"conditional": {"drop_token_fraction": drop}},
                    "eval": {"hit_threshold": 0.0, "scenarios": {
                        "unconditional": {"num_samples": N},
                        "unconditional_sentence_level": {"num_samples": N2, "secondary_to": "unconditional"}}}},
           "objective": {"_target_": TARGETS[objective]},
           "data": {"source": {"_target_": "phf.data.corpora.LocalPIISource",
                               **{k: structure[k] for k in ("content_coupling", "open_misaligned", "density",
                                                            "opening_entities")}}}}
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    k1, k2 = fake_hits(point, objective, seed, drop)
    ev = {"task": "pii", "objective": objective, "tokens_seen": 1_536_000,
          "scenarios": {"unconditional": {"score": 2 * k1 / N, "hit_rate": k1 / N, "num_samples": N},
                        "unconditional_sentence_level": {"score": 2 * k2 / N2, "hit_rate": k2 / N2, "num_samples": N2}},
          "heldout_clean": {"loss": 5.3 + 0.01 * seed, "num_docs": 60}}
    (run / "eval.json").write_text(json.dumps(ev))
    return run


def fake_stats(stats_dir, point: str, ratio: float):
    structure = OmegaConf.to_container(OmegaConf.load(CONF / "structure" / f"{point}.yaml"))
    stats_dir.mkdir(parents=True, exist_ok=True)
    (stats_dir / f"{point}.json").write_text(json.dumps({
        "overrides": ["+experiment=structure_sweep", f"structure={point}"], "n": 0,
        "settings": {k: structure[k] for k in ("content_coupling", "open_misaligned", "density")},
        "truth": {"protocol_ratio": ratio * 0.8},
        "scores": {"protocol_ratio": ratio, "content_kappa": 0.5, "opening_lift": {"ratio": 2.0, "lo": 1.5, "hi": 2.5},
                   "later_doc|first_aligned": {"k": 65, "n": 1208}, "later_doc|first_misaligned": {"k": 1312, "n": 1790}}}))


def fake_sweep(root):
    """s0 and s4 × mle/filtering/conditional × seeds 1-3, conditional at drop 0.1 on s4, corpus statistics."""
    for point in RATIOS:
        for objective in TARGETS:
            for seed in (1, 2, 3):
                fake_run(root / "runs", point, objective, seed)
        fake_stats(root / "corpus_stats", point, RATIOS[point])
    for seed in (1, 2, 3):
        fake_run(root / "drop", "s4", "conditional", seed, drop=0.1)
    return root


def test_collector_on_fake_runs(tmp_path):
    collect = _collector()
    sweep = fake_sweep(tmp_path / "sweep")
    rows = collect.main([str(sweep)])
    with open(sweep / "structure_sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 2 * (2 * 3 + 2)  # 2 scenarios × (2 points × 3 objectives + the drop cell's 2)
    assert (sweep / "structure_sweep.png").stat().st_size > 20_000 and (sweep / "structure_sweep.pdf").stat().st_size > 5_000
    assert "| s4 |" in (sweep / "structure_sweep.md").read_text()

    def row(point, objective, scenario="unconditional", drop="0.01"):
        [r] = [r for r in table if (r["point"], r["objective"], r["scenario"], r["drop_token_fraction"])
               == (point, objective, scenario, drop)]
        return r

    # seeds as the unit: the mean of the three runs' hit rates, with the t interval around it
    r = row("s4", "mle")
    rates = [fake_hits("s4", "mle", s, 0.01)[0] / N for s in (1, 2, 3)]
    assert float(r["hit_rate"]) == pytest.approx(sum(rates) / 3)
    assert float(r["hit_rate_ci_low"]) < float(r["hit_rate"]) < float(r["hit_rate_ci_high"])
    assert r["seeds"] == "3" and r["hit_rate_ratio"] == "nan" and r["protocol"] == "paper (primary)"
    assert float(r["protocol_ratio"]) == 0.17 and float(r["protocol_ratio_truth"]) == pytest.approx(0.136)
    assert float(r["protocol_ratio_doc"]) == pytest.approx(0.11715, abs=5e-6)  # collect.doc_protocol_ratio's example
    assert r["opening_entities"] == "[EMAIL_ADDRESS,PHONE_NUMBER,IP_ADDRESS]" and r["content_coupling"] == "1.0"
    # paired with MLE by seed: phf.eval.compare.paired_ratio on continuity-corrected rates
    for point, objective, scenario, drop, k in (("s4", "conditional", "unconditional", 0.01, 0),
                                                ("s0", "filtering", "unconditional", 0.01, 0),
                                                ("s4", "conditional", "unconditional_sentence_level", 0.01, 1),
                                                ("s4", "conditional", "unconditional", 0.1, 0)):
        n = N if k == 0 else N2
        expected = paired_ratio([corrected_rate(fake_hits(point, objective, s, drop)[k], n) for s in (1, 2, 3)],
                                [corrected_rate(fake_hits(point, "mle", s, 0.01)[k], n) for s in (1, 2, 3)])
        got = row(point, objective, scenario, str(drop))
        assert (float(got["hit_rate_ratio"]), float(got["hit_rate_ratio_ci_low"]), float(got["hit_rate_ratio_ci_high"])) \
            == pytest.approx((expected.ratio, expected.low, expected.high)), (point, objective, scenario, drop)
        assert got["seed_pairs"] == "3"
    # the drop cell borrows the point's MLE runs (MLE does not use the drop fraction)
    borrowed = row("s4", "mle", drop="0.1")
    assert borrowed["runs"] == "s4-mle-seed1 s4-mle-seed2 s4-mle-seed3"
    assert row("s4", "conditional", drop="0.1")["reference_runs"] == borrowed["runs"]
    assert row("s4", "conditional", "unconditional_sentence_level")["protocol"] == "sentence-level (secondary)"
    assert math.isclose(float(row("s0", "conditional")["heldout_clean_loss"]), 5.32)


def test_collector_refuses_missing_or_stale_statistics(tmp_path):
    collect = _collector()
    sweep = fake_sweep(tmp_path / "sweep")
    (sweep / "corpus_stats" / "s0.json").unlink()
    with pytest.raises(SystemExit, match="no corpus statistic for structure point s0"):
        collect.collect(sweep, sweep / "corpus_stats")
    fake_stats(sweep / "corpus_stats", "s0", 0.91)
    stale = json.loads((sweep / "corpus_stats" / "s4.json").read_text())
    stale["settings"]["open_misaligned"] = 0.5
    (sweep / "corpus_stats" / "s4.json").write_text(json.dumps(stale))
    with pytest.raises(SystemExit, match=r"s4.json was measured at open_misaligned=0.5"):
        collect.collect(sweep, sweep / "corpus_stats")


def test_collector_refuses_runs_outside_the_sweep(tmp_path):
    collect = _collector()
    run = fake_run(tmp_path / "sweep", "s0", "mle", 1)
    text = (run / "config.yaml").read_text().replace("name: s0", "name: ''")
    (run / "config.yaml").write_text(text)
    with pytest.raises(SystemExit, match="has no structure.name"):
        collect.collect(tmp_path / "sweep", tmp_path / "stats")
