"""Two trainings on one run directory: the second is refused (the run lock), writing nothing there.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phf.train import train
from tests.conftest import TINY


# -- two trainings on one run directory --------------------------------------------------------------------------------
def hold_lock(run: Path) -> subprocess.Popen:
    """Another process that holds ``run``'s lock, as a live phf-train would."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, socket, sys, time\n"
        f"fd = os.open({str(run / 'phf.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()} {socket.gethostname()}'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    return holder


def test_second_training_on_a_run_directory_in_use_is_refused(fast_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"run directory {re.escape(str(run))} is in use by PID {holder.pid} "
                                               r"\(lock file .*phf.lock"):
            train(fast_cfg("trainer.max_steps=1"))
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is stale, the next run takes it over and says so
    with caplog.at_level(logging.WARNING, logger="phf.train"):
        assert train(fast_cfg("trainer.max_steps=1"))["step"] == 1
    assert f"taking over the stale lock {run / 'phf.lock'}" in caplog.text
    assert (run / "phf.lock").read_text() == ""  # released at the end


@pytest.mark.slow
def test_phf_train_refused_for_a_directory_in_use_writes_nothing_there(tmp_path):
    """phf-train's own failure record (error.txt) must not land in the directory of the live run."""
    from tests.reliability.harness import command, env

    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = subprocess.run(command(run, base=TINY), env=env(), capture_output=True, text=True, timeout=300)
        assert res.returncode != 0 and f"is in use by PID {holder.pid}" in res.stderr
        assert not (run / "error.txt").exists()
    finally:
        holder.kill()
        holder.wait()
