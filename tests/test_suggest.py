"""'Did you mean' (issue 28, item 7): a key or group typo on the command line is answered with the nearest
valid keys or options in one line (exit status 2), not Hydra's '+' hint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from phf.suggest import check_overrides, nearest, overrides_of
from tests.conftest import CONF, ROOT


@pytest.mark.parametrize("args, said", [
    (["trainer.max_step=10"], "trainer.max_step is not a key of the config; did you mean trainer.max_steps"),
    (["data.source.pth=x", "task=pii", "data=jsonl"], "did you mean data.source.path?"),
    (["objectiv=mle"], "objectiv is not a key of the config; did you mean objective?"),
    (["-m", "objective=condtional,mle"], "objective=condtional: there is no objective config 'condtional'; did you "
                                         "mean objective=conditional? (choices: awr, conditional,"),
    (["+experiment=dmo"], "did you mean experiment=demo?"),
    (["data=jsonl", "data.source.path=x"], "no task chosen (it decides how text is segmented"),
])
def test_a_typo_gets_the_nearest_valid_choice(args, said, capsys):
    with pytest.raises(SystemExit) as e:
        check_overrides(args, str(CONF), prog="phf-train")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("phf-train: ") and said in err and "To append to your config" not in err


def test_valid_command_lines_and_non_job_flags_pass():
    check_overrides(["trainer.max_steps=3", "objective=mle,conditional", "+experiment=demo"], str(CONF))
    assert overrides_of(["-m", "a=1", "--multirun"]) == ["a=1"]
    assert overrides_of(["--help"]) is None and overrides_of(["-sc", "query=bash"]) is None
    check_overrides(["--cfg", "job", "trainer.max_steps=3"], str(CONF))


def test_nearest_prefers_the_keys_under_the_same_parent():
    keys = ["trainer.max_steps", "trainer.max_bad_steps", "data.max_steps_x", "model.n_layer"]
    assert nearest("trainer.max_step", keys)[0] == "trainer.max_steps"
    assert nearest("zzz", keys) == []


def test_phf_train_prints_one_line_and_no_traceback(tmp_path):
    """The console script end to end: no traceback, no run directory, exit status 2."""
    code = "import sys; sys.argv = ['phf-train', 'trainer.max_step=10']; from phf.cli import train; train()"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # one line
    assert "did you mean trainer.max_steps" in r.stderr and not (tmp_path / "outputs").exists()
