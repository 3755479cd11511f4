"""Multiruns through `python -m phf.train -m`: failures are recorded, joblib runs jobs in parallel,
the Slurm launcher config composes, and a sweep of dry runs prints every objective's plan."""

from __future__ import annotations

import json
import re
from datetime import datetime

from tests.conftest import TINY
from tests.experiments.conftest import OBJECTIVES, compose_run, run_phf_train


def _log_span(job_dir) -> tuple[datetime, datetime]:
    """First and last timestamp of a job's Hydra log (``<job_dir>/train.log``)."""
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", (job_dir / "train.log").read_text(), re.M)
    assert stamps, f"no log lines in {job_dir}"
    t = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in stamps]
    return t[0], t[-1]


def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    """AWR cannot train without a value head: that job fails, the others run to the end."""
    sweep = tmp_path / "sweep"
    res = run_phf_train(["-m", "objective=mle,awr,conditional", "model.value_head=false", *TINY,
                         f"hydra.sweep.dir={sweep}"])
    assert res.returncode == 0, res.stderr[-3000:]
    failures = [json.loads(line) for line in (sweep / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 1
    assert failures[0]["run_dir"] == str(sweep / "1-awr")
    assert "needs a value head" in failures[0]["error"] and "objective=awr" in failures[0]["overrides"]
    assert "needs a value head" in (sweep / "1-awr" / "error.txt").read_text()
    assert not (sweep / "1-awr" / "final").exists()
    for ok in ("0-mle", "2-conditional"):  # the jobs before and after the failure both finished
        assert (sweep / ok / "final" / "phf_summary.json").is_file()
        assert not (sweep / ok / "error.txt").exists()
    assert "1-awr failed" in res.stderr + res.stdout


def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_phf_train(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "objective=mle,conditional",
                         *TINY, "trainer.max_steps=6", f"hydra.sweep.dir={sweep}"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in res.stderr + res.stdout
    a, b = (sweep / "0-mle", sweep / "1-conditional")
    for job in (a, b):
        assert (job / "final" / "phf_summary.json").is_file()
    (a0, a1), (b0, b1) = _log_span(a), _log_span(b)
    assert a0 < b1 and b0 < a1, f"jobs did not overlap: mle {a0}..{a1}, conditional {b0}..{b1}"
    assert not (sweep / "failures.jsonl").exists()


def test_slurm_launcher_configs_compose(tmp_path):
    from phf.entry import compose

    plain = compose(["hydra/launcher=submitit_slurm", f"run_dir={tmp_path}"], return_hydra_config=True)
    ours = compose(["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu", f"run_dir={tmp_path}",
                    "+experiment=pep8_pretrain", "objective=awr"], return_hydra_config=True)
    for cfg in (plain, ours):
        assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    launcher = ours.hydra.launcher
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 1, 1)
    assert launcher.max_num_timeout > 0 and launcher.timeout_min == 2880


def test_sweep_of_dry_runs_prints_each_objectives_plan(tmp_path):
    """The real CLI path: `${hydra:runtime.choices.objective}` picks each job's row of the table."""
    res = run_phf_train(["-m", "+experiment=toxicity_pretrain", f"objective={','.join(OBJECTIVES)}",
                         "trainer.dry_run=true", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert res.returncode == 0, res.stderr[-3000:]
    plans = [json.loads(m) for m in re.findall(r"^\{\n.*?^\}", res.stdout, re.M | re.S)]
    got = {p["objective"]: (p["lr"], p["effective_batch_size"], p["max_steps"]) for p in plans}
    assert got == {"MLE": (5e-4, 64, 50354), "Filtering": (5e-4, 64, 50354), "Conditional": (5e-4, 64, 50354),
                   "Unlikelihood": (5e-4, 64, 50354), "RWR": (5e-4, 1024, 3147), "AWR": (1e-3, 1024, 3147)}
    assert not list((tmp_path / "sweep").glob("*/final"))


def test_demo_sweep_composes_with_its_launcher(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    from phf.entry import compose

    cfg = compose_run(["+experiment=demo_sweep", "objective=conditional", "seed=2", f"run_dir={tmp_path}"])
    assert cfg.task.name == "pii" and cfg.data.source._target_.endswith("LocalPIISource")
    full = compose(["+experiment=demo_sweep", "objective=conditional", "seed=2"], return_hydra_config=True)
    HydraConfig.instance().set_config(full)
    assert full.hydra.sweep.subdir == "conditional-seed2"  # each seed of an objective gets its own run dir


def test_score_cache_is_shared_by_the_jobs_of_a_sweep(tmp_path):
    """Three objectives read the same documents: jobs 2 and 3 find ≥ 95% of their segments in the cache
    job 1 filled (hit rate = cache_hits / segments over the whole run, logged as scorer/*)."""
    from phf.tracking import read_metrics

    sweep = tmp_path / "sweep"
    res = run_phf_train(["-m", "objective=mle,conditional,unlikelihood", *TINY, "trainer.max_steps=4",
                         f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"])
    assert res.returncode == 0, res.stderr[-3000:]
    rates = []
    for job in ("0-mle", "1-conditional", "2-unlikelihood"):
        last = [r for r in read_metrics(sweep / job) if "scorer/segments" in r][-1]
        assert last["scorer/segments"] > 0
        rates.append(last["scorer/cache_hits"] / last["scorer/segments"])
    print("cache hit rates per job:", rates)
    assert rates[1] >= 0.95 and rates[2] >= 0.95, rates
    assert rates[0] < rates[1]  # job 1 really scored: the cache started empty
