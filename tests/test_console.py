"""What a person sees at the console (issue 16, point 5): progress lines without the bar, the
evaluation's estimate, quiet library noise, fast entry points and helpful errors for bare commands."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from phf import console
from phf.entry import conf_dir
from tests.conftest import CONF, ROOT


def python(code: str, cwd, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# -- the entry points ------------------------------------------------------------------------------
def test_the_console_scripts_module_imports_no_torch(tmp_path):
    """Every Tab of a completion runs phf-train: it must load Hydra only, not torch or transformers."""
    r = python("import sys, phf.cli; heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; "
               "assert not heavy, heavy", tmp_path)
    assert r.returncode == 0, r.stderr


def test_completion_query_answers_without_importing_torch(tmp_path):
    code = ("import sys; sys.argv = ['phf-train', '-sc', 'query=bash']\n"
            "from phf.cli import train\n"
            "try:\n    train()\nfinally:\n    assert 'torch' not in sys.modules\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), COMP_LINE="phf-train objective=co", COMP_POINT="22")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "objective=conditional" in r.stdout


def test_bare_phf_spa_says_what_is_missing_with_an_example(tmp_path):
    r = python("import sys; sys.argv = ['phf-spa']; from phf.cli import spa; spa()", tmp_path)
    assert r.returncode == 2
    assert "phf-spa +experiment=spa_pep8 spa.init_from=RUN/final" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "outputs").exists()  # answered before Hydra made a run directory


@pytest.mark.parametrize("args, message", [
    (["seed=1"], "no `spa` settings: phf-spa needs an SPA experiment"),
    (["+experiment=spa_pep8"], "set spa.init_from to the pretrained checkpoint"),
])
def test_phf_spa_without_experiment_or_checkpoint_is_a_usage_error(tmp_path, args, message):
    r = python(f"import sys; sys.argv = ['phf-spa', *{args!r}]; from phf.cli import spa; spa()", tmp_path, 300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"phf-spa: {message}" in r.stderr and "spa.init_from=RUN/final" in r.stderr
    assert "Traceback" not in r.stderr


def test_conf_dir_is_phf_conf_dir_else_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("PHF_CONF_DIR", raising=False)
    assert conf_dir() == CONF
    monkeypatch.setenv("PHF_CONF_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has no config.yaml"):
        conf_dir()
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    assert conf_dir() == tmp_path.resolve()


# -- progress lines --------------------------------------------------------------------------------
def test_progress_log_first_last_and_at_most_one_line_per_interval(caplog):
    now = [0.0]
    logger = logging.getLogger("phf.test_console")
    p = console.ProgressLog(logger, total_steps=100, start_step=0, every_s=10, clock=lambda: now[0])
    written = []
    with caplog.at_level(logging.INFO, logger="phf.test_console"):
        for step in range(1, 101):
            now[0] = step * 1.0  # 1 s per step
            if p.row(step, 2.5, 1000.0):
                written.append(step)
    assert written == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100]
    assert caplog.records[1].getMessage() == \
        "step 11/100 (11%) | loss 2.5000 | 1,000 tokens/s | elapsed 11s | ETA 1m29s"
    off = console.ProgressLog(logger, 10, 0, 0, enabled=False)
    assert not off.row(10, 1.0, 1.0)


def test_duration_is_short():
    assert [console.duration(s) for s in (4.2, 65, 7260, float("nan"))] == ["4s", "1m05s", "2h01m", "?"]


def test_training_without_the_bar_logs_progress_and_estimates_the_evaluation(tiny_cfg, caplog, monkeypatch,
                                                                             one_thread):
    """trainer.progress=false (TINY): a line for the first and the last step when the interval is long;
    before the end-of-run evaluation its size and time in one line, and a warning when it will outlast
    the training (forced here: a probe-timed estimate of a tiny evaluation is honest and short)."""
    import phf.trainer
    from phf.train import train

    real = phf.trainer.estimate_cost
    costs = []

    def slow_estimate(*args, **kwargs):
        cost = real(*args, **kwargs)
        costs.append(cost)
        cost.seconds = 1e6
        return cost

    monkeypatch.setattr(phf.trainer, "estimate_cost", slow_estimate)
    cfg = tiny_cfg("trainer.progress_every_s=3600", "trainer.final_eval=true", "trainer.eval_probe_tokens=2",
                   "task.eval.scenarios.unconditional.num_samples=2", "task.eval.scenarios.functions.num_samples=2",
                   "task.eval.scenarios.red_team_prompts.num_samples=2", "task.eval.batch_size=2")
    with caplog.at_level(logging.INFO, logger="phf"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "phf.train"]
    steps = [m for m in lines if m.startswith("step ")]
    assert [m.split(" |")[0] for m in steps] == ["step 1/3 (33%)", "step 3/3 (100%)"]
    assert all("tokens/s" in m and "ETA" in m for m in steps)
    (estimate,) = [m for m in lines if m.startswith("evaluation: ")]
    assert "6 samples (unconditional 2 × ≤31, functions 2 × ≤31, red_team_prompts 2 × ≤31 new tokens)" in estimate
    assert "≤ 186 generated tokens" in estimate
    assert costs[0].steps == 3 * 31  # one batch of 2 per scenario, ≤ 31 new tokens in the 32-token context
    assert any(m.startswith("the end-of-run evaluation will likely take longer") for m in lines)
    evals = [i for i, r in enumerate(caplog.records) if r.getMessage().startswith("eval unconditional")]
    assert evals and [r.getMessage() for r in caplog.records].index(estimate) < evals[0]


# -- library noise ---------------------------------------------------------------------------------
def test_quiet_hf_progress_restores_the_bars():
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    with console.quiet_hf_progress():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with console.quiet_hf_progress():
            pass
        assert not hf_logging.is_progress_bar_enabled()  # the user's choice stays
    finally:
        hf_logging.enable_progress_bar()


def test_the_padding_warning_is_dropped_only_for_phf_calls(caplog):
    console.hide_packed_padding_warning()
    console.hide_packed_padding_warning()  # idempotent
    logger = logging.getLogger(console.PADDING_WARNING_LOGGER)
    assert logger.filters.count(console._PADDING_FILTER) == 1
    message = console.PADDING_WARNING + " since your input_ids may be padded."
    with caplog.at_level(logging.WARNING, logger=console.PADDING_WARNING_LOGGER):
        exec("def forward():\n    logger.warning(message)\n", ns := {"__name__": "phf.model", "logger": logger,
                                                                     "message": message})
        ns["forward"]()  # as if from phf's own forward: dropped
        logger.warning(message)  # the user's call: kept
        exec("def other():\n    logger.warning('another warning')\n", ns)
        ns["other"]()  # any other transformers warning, even from phf: kept
    assert [r.getMessage() for r in caplog.records] == [message, "another warning"]


# -- a quieter, plainer command line (issue 28, item 7) ---------------------------------------------------------
def test_plain_drops_rst_markup():
    from phf.console import plain

    assert plain("``phf-data`` reads :func:`phf.x.y` and `a` **b**") == "phf-data reads phf.x.y and a b"


def test_help_texts_are_plain_text(tmp_path, capsys):
    from phf.data_cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    assert "phf-data" in out and "`" not in out
    r = python("import sys; sys.argv = ['phf-train', '--help']; from phf.cli import train; train()", tmp_path)
    assert r.returncode == 0 and "objective: awr, conditional" in r.stdout
    assert "powered by Hydra" not in r.stdout.lower() and "`" not in r.stdout.split("== Config ==")[0]


def test_make_help_has_no_ansi_codes_in_a_pipe():
    r = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "  demo " in r.stdout and "\033" not in r.stdout


def test_third_party_start_up_logs_are_summarised_in_one_line(caplog):
    """Three records of a library's logger inside the block: one INFO line counting them (2 INFO, 1 WARNING),
    each kept at DEBUG; an ERROR passes through as it was."""
    import logging

    from phf.console import summarised_logs

    lib, ours = logging.getLogger("some-library"), logging.getLogger("phf.test")
    with caplog.at_level(logging.DEBUG):
        with summarised_logs("some-library", "engine built", ours):
            lib.info("Loaded recognizer: A")
            lib.info("Loaded recognizer: B")
            lib.warning("Recognizer not added")
            lib.error("real trouble")
    shown = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert shown == [("some-library", "ERROR", "real trouble"),
                     ("phf.test", "INFO", "some-library: engine built (2 INFO, 1 WARNING lines of some-library's "
                                          "log, at DEBUG level: hydra.verbose=phf.test shows them)")]
    assert sum(r.levelname == "DEBUG" and "Loaded recognizer" in r.getMessage() for r in caplog.records) == 2
    assert lib.handlers == [] and lib.propagate  # put back as it was
