"""phf installed from its wheel, run from a directory outside the repository (issue 16, point 1).

The wheel must carry the configs (``conf/`` installs as ``phf.conf``) and every data file phf reads at
run time; ``phf.entry.conf_dir`` must find the installed configs when no repository is around.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

from tests.conftest import ROOT, TINY

#: what the build reads from the checkout (not its outputs, caches or virtual environment)
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "phf", "conf")


def test_the_package_list_names_every_phf_package():
    """pyproject lists the packages explicitly (find cannot map conf/ into phf): a new subpackage must be
    added there, or the wheel would lack it."""
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = find_packages(str(ROOT), include=["phf", "phf.*"])
    assert sorted(listed) == sorted([*found, "phf.conf"])


def data_files_read_at_run_time() -> set[str]:
    """Every non-Python file under phf/ (prompt sets, py.typed) and every YAML of conf/, as wheel paths."""
    out = {p.relative_to(ROOT).as_posix() for p in (ROOT / "phf").rglob("*")
           if p.is_file() and p.suffix not in (".py", ".pyc")}
    out |= {"phf/conf/" + p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    return out


def test_the_wheel_installs_and_trains_outside_the_repository(tmp_path):
    """Build the wheel, install it into a fresh target, and from another directory (the repository not
    on sys.path) run ``python -m phf.train --help``, a dry run and a 2-step tiny training (~50 s)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                   cwd=src, check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("phf-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = data_files_read_at_run_time() - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert "phf/conf/hydra/launcher/slurm_gpu.yaml" in names  # the Hydra launcher configs too
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)

    elsewhere = tmp_path / "elsewhere"  # not the repository, and the repository not on sys.path
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PHF_CONF_DIR")}
    env.update(PYTHONPATH=str(site), HF_HOME=str(tmp_path / "hf"), PHF_CACHE_DIR=str(tmp_path / "cache"),
               WANDB_DIR=str(tmp_path / "wandb"), OMP_NUM_THREADS="1")

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, f"{args}: {r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        return r

    # the repository on sys.path = an entry inside it that is not the interpreter's own prefix (a .venv
    # created inside the clone, as `make install` does, is the environment, not the repository)
    probe = ("import os, sys, phf, phf.entry; print(phf.__file__); print(phf.entry.conf_dir()); "
             f"root = {str(ROOT)!r}; prefix = os.path.realpath(sys.prefix); "
             "print(any(p and os.path.realpath(p).startswith(root) "
             "and not os.path.realpath(p).startswith(prefix) for p in sys.path))")
    where = run("-c", probe).stdout.split("\n")
    assert Path(where[0]).is_relative_to(site), where
    assert Path(where[1]) == site / "phf" / "conf", where
    assert where[2] == "False", "the repository is on sys.path"

    assert "== Config ==" in run("-m", "phf.train", "--help").stdout
    dry = run("-m", "phf.train", "trainer.dry_run=true", f"hydra.run.dir={tmp_path / 'dry'}")
    assert '"max_steps"' in dry.stdout
    run_dir = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("trainer.max_steps")]
    run("-m", "phf.train", *tiny, "trainer.max_steps=2", f"hydra.run.dir={run_dir}")
    assert (run_dir / "final" / "config.json").is_file()
    # the console script of the wheel (phf.cli) composes from the installed configs without torch
    (script,) = (site / "bin").glob("phf-train")
    r = subprocess.run([sys.executable, str(script), "--cfg", "job"], cwd=elsewhere, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "trainer:" in r.stdout, r.stderr[-2000:]
