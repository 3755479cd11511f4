"""What the entry points share before anything heavy is imported: where the configs are
(``conf_dir``), the Hydra entry that records failures (``hydra_entry``, ``record_failure``), the
errors it treats specially (``RunDirInUse``, ``UsageError``) and ``flatten``, the dotted view of a
resolved config that the resume check and phf-report compare runs by.

This module imports neither torch nor transformers (nor any phf module that does): the console
scripts (``phf.cli``) compose the config, answer ``--help`` and shell tab completion
(``phf-train -sc query=bash``, run on every Tab) with only Hydra loaded, and import the job's module
after that. The torch-importing shared parts live by concern in ``phf.devices``, ``phf.optim`` and
``phf.train_state`` (docs/architecture.md).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the root config every entry point composes: ``conf/config.yaml`` (a run's own config.yaml is phf.rundir's)
CONFIG_NAME = "config"
CONFIG_FILE = f"{CONFIG_NAME}.yaml"


class RunDirInUse(RuntimeError):
    """Another live process holds the run directory's lock."""


class UsageError(ValueError):
    """The command line is incomplete (e.g. ``phf-spa`` without ``+experiment=...``): a single run
    prints the message and exits with status 2 instead of a traceback."""


class FinishedRunError(UsageError):
    """phf-train refused to train over a finished run (``phf.train.check_finished_run``): the message says
    why and what to do; nothing (no ``error.txt``) is written into that run's directory."""


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; an empty mapping stays a leaf."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _has_config(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def conf_dir() -> Path:
    """Where the configs are, in this order:

    1. ``$PHF_CONF_DIR`` (a copy of ``conf/`` a user edits, or a project's own config tree);
    2. ``conf/`` at the top of the repository phf runs from (a clone, or an editable install): the
       configs a developer edits are the ones used, never a stale installed copy;
    3. the configs installed with the package (``phf/conf/`` in a wheel or a non-editable install;
       ``pyproject.toml`` maps ``phf.conf`` to the repository's ``conf/``).

    The repository is recognised by its ``pyproject.toml`` next to ``conf/config.yaml``, so a stray
    ``conf/`` in site-packages (another project's) is never taken for phf's.
    """
    env = os.environ.get("PHF_CONF_DIR")
    if env:
        path = Path(env).expanduser()
        if not _has_config(path):
            raise FileNotFoundError(f"PHF_CONF_DIR={env} has no {CONFIG_FILE}: point it at a copy of phf's conf/ "
                                    f"directory, or unset it to use the configs phf was installed with")
        return path.resolve()
    package = Path(__file__).resolve().parent
    repository = package.parent
    if (repository / "pyproject.toml").is_file() and _has_config(repository / "conf"):
        return repository / "conf"
    if _has_config(package / "conf"):
        return package / "conf"
    raise FileNotFoundError(f"phf's configs are not found: neither {repository / 'conf'} (a clone) nor "
                            f"{package / 'conf'} (an installed wheel) has {CONFIG_FILE}. Reinstall phf, or set "
                            f"PHF_CONF_DIR to a copy of the repository's conf/ directory")


def compose(overrides: Iterable[str] = (), *, return_hydra_config: bool = False, config_name: str = CONFIG_NAME,
            prog: str | None = None):
    """The root config (``conf_dir()/config.yaml``, or another primary config of ``conf_dir()``, e.g.
    ``score`` for phf-score) with ``overrides``, composed as the console scripts compose it: the one place
    phf and its experiments call Hydra's compose API.

    Works inside a running Hydra app too (phf-eval reading a run's objective): Hydra's global state is
    saved and put back. A config composed this way was not launched, so ``run_dir`` (Hydra's job
    directory) resolves only when ``overrides`` set it or ``return_hydra_config`` is on and the caller
    sets ``HydraConfig``. With ``prog`` (a command's name), a typo in ``overrides`` (an unknown key or
    option, a missing choice) is one line naming the nearest valid ones (``phf.suggest.explain``,
    SystemExit) instead of Hydra's traceback.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides),
                                 return_hydra_config=return_hydra_config)
    except Exception as e:
        from phf.suggest import explain

        msg = explain(e, list(overrides), str(conf_dir()), config_name) if prog else None
        if msg is None:
            raise
        raise SystemExit(f"{prog}: {msg}") from None
    finally:
        restore_gh_from_backup(backup)


def record_failure(run_dir: Path, error: BaseException, overrides: Iterable[str] = (),
                   sweep_dir: Path | None = None) -> None:
    """Write the traceback to ``RUN_DIR/error.txt`` (and a line to the sweep's ``failures.jsonl``); a
    ``FinishedRunError`` leaves the finished run's directory as it was (the sweep's line only).

    A failure to write is logged, never raised: the original error is what the caller re-raises.
    """
    try:
        if not isinstance(error, FinishedRunError):
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
    except OSError as write_error:  # e.g. an unwritable run_dir: report both, keep the original error
        log.error("could not write %s: %s", run_dir / "error.txt", write_error)
    if sweep_dir is None:
        return
    log.error("job %s failed: %s: %s (traceback in %s)", run_dir, type(error).__name__, error, run_dir / "error.txt")
    try:
        with open(sweep_dir / "failures.jsonl", "a") as f:
            f.write(json.dumps({"run_dir": str(run_dir), "error": f"{type(error).__name__}: {error}",
                                "overrides": list(overrides)}) + "\n")
    except OSError as write_error:
        log.error("could not write %s: %s", sweep_dir / "failures.jsonl", write_error)


def _prog() -> str:
    """The command's name for messages: phf-spa; "phf" under python -m ("rounds.py", "__main__.py")."""
    prog = Path(sys.argv[0]).name
    return "phf" if prog.endswith(".py") else prog


def hydra_entry(job: Callable[[Any], Any], config_name: str = CONFIG_NAME) -> None:
    """Compose the config from ``conf_dir()`` and run ``job(cfg)``.

    A failure is recorded in the run directory; in a multirun it does not end the sweep (the job's
    result is None and the sweep's ``failures.jsonl`` names it), in a single run it is re-raised. A
    run directory held by another live run (``RunDirInUse``) gets nothing written into it. A
    ``UsageError`` in a single run is printed without a traceback (exit status 2).
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig

    # wraps: Hydra names the job (and its log file, e.g. train.log) after the module of ``job``
    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)
    @functools.wraps(job)
    def _main(cfg):
        try:
            return job(cfg)
        except Exception as e:
            if isinstance(e, RunDirInUse):  # the directory belongs to the live run
                raise
            hc = HydraConfig.get()
            multirun = hc.mode.name == "MULTIRUN"
            record_failure(Path(cfg.run_dir), e, hc.overrides.task, Path(hc.sweep.dir) if multirun else None)
            if multirun:
                return None
            if isinstance(e, UsageError):
                print(f"{_prog()}: {e}", file=sys.stderr)
                sys.exit(2)
            raise

    from phf.suggest import check_overrides

    check_overrides(sys.argv[1:], str(conf_dir()), config_name, prog=_prog())  # "did you mean", before Hydra
    _main()
