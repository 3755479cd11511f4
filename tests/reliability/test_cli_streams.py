"""Round 3, command-line streams (issue 27): ``phf-data`` prints blocks as it makes them, in constant
memory, and stops quietly when its reader closes the pipe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.reliability.conftest import fast_overrides


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_phf_data_streams_a_huge_n_in_constant_memory(prescored, tmp_path):
    """n=100000000 used to collect every block before printing (0.47 -> 1.23 GB in 60 s, nothing printed).
    Now the first block comes at once, and RSS stays flat over the next few hundred blocks (the corpus
    is re-read epoch after epoch)."""
    cmd = [sys.executable, "-m", "phf.data_cli", *fast_overrides(prescored), f"cache_dir={tmp_path}",
           "n=100000000", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env(), cwd=tmp_path)
    try:
        t0 = time.perf_counter()
        first = proc.stdout.readline()
        first_s = time.perf_counter() - t0
        assert first.startswith(b'{"block": 0, "input_ids": [')
        for _ in range(49):
            proc.stdout.readline()
        early = rss_mb(proc.pid)
        for _ in range(500):
            line = proc.stdout.readline()
        late = rss_mb(proc.pid)
        assert line.startswith(b'{"block": 549,')
        assert proc.poll() is None  # still going: it prints as it goes
    finally:
        proc.kill()
        proc.wait()
    print(f"first block after {first_s:.1f} s (start-up included); RSS after 50 blocks {early:.0f} MB, "
          f"after 550 blocks {late:.0f} MB")
    assert late - early < 50


def test_phf_data_into_head_exits_quietly(prescored, tmp_path):
    args = " ".join([*fast_overrides(prescored), f"cache_dir={tmp_path}", "n=1000"])
    for fmt in ("--json", ""):
        shell = f"{sys.executable} -m phf.data_cli {args} {fmt} 2>{tmp_path}/err | head -1; echo \"${{PIPESTATUS[0]}}\""
        out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env(), cwd=tmp_path,
                             timeout=300).stdout.splitlines()
        err = (tmp_path / "err").read_text()
        assert out[0].startswith('{"block": 0' if fmt else "=== block 0:")
        assert out[-1] == "0", err  # phf-data's own exit status
        assert "Traceback" not in err and "BrokenPipe" not in err, err
