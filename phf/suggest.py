"""'Did you mean': a command line's key or group typo named with the nearest valid choices.

Hydra answers ``phf-train trainer.max_step=10`` with "To append to your config use +trainer.max_step=10",
which only leads to a traceback later (``unknown trainer keys``), and ``objective=condtional`` with the list
of every option. ``check_overrides`` composes the config the command line asks for before Hydra does (the
first value of each sweep); when that fails on a key or an option that does not exist, it prints one line
with the nearest valid keys or options (``difflib``) and exits with status 2. Anything it does not
recognise is left to Hydra, which reports it as before. Only Hydra is imported (``phf.cli`` stays light).
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence

#: Hydra options after which phf-train does not run a job (help, tab completion, info): nothing to check
_NO_JOB = ("-h", "--help", "--hydra-help", "--version", "-sc", "--shell-completion", "-i", "--info", "-cn",
           "--config-name", "-cp", "--config-path", "-cd", "--config-dir")
_CUTOFF = 0.6  # difflib similarity a suggestion needs (0..1)


def overrides_of(args: Sequence[str]) -> list[str] | None:
    """The overrides of a Hydra command line (flags such as ``-m`` dropped); None when the command runs no
    job with the default config (help, tab completion, another config)."""
    out = []
    for a in args:
        if a.split("=", 1)[0] in _NO_JOB:
            return None
        if not a.startswith("-"):
            out.append(a)
    return out


def _first_values(overrides: list[str]) -> list[str] | None:
    """Each sweep (``a=1,2``, ``range(...)``) replaced by its first value: one job's config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 (a syntax error: Hydra's own message says where)
        return None
    out = []
    for line, o in zip(overrides, parsed, strict=True):
        if o.is_sweep_override():
            try:
                first = next(iter(o.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 (a sweep without a list of values: keep the line as it is)
                out.append(line)
                continue
            out.append(f"{o.get_key_element()}={first}")
        else:
            out.append(line)
    return out


def _compose(conf_dir: str, config_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        return compose(config_name=config_name, overrides=["run_dir=.", *overrides])


def config_keys(cfg) -> list[str]:
    """Every dotted key of ``cfg``, the mappings' own paths included (``trainer``, ``trainer.lr``)."""
    from omegaconf import OmegaConf

    out: list[str] = []

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}{k}"
            out.append(key)
            if isinstance(v, dict):
                walk(v, key + ".")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return out


def nearest(word: str, choices: Sequence[str], n: int = 3) -> list[str]:
    """The choices closest to ``word`` (difflib ratio >= 0.6), best first; for a dotted key the keys under
    the same parent are compared by their last part first (``trainer.max_step`` → ``trainer.max_steps``)."""
    parent, _, leaf = word.rpartition(".")
    siblings = {c.rpartition(".")[2]: c for c in choices if c.rpartition(".")[0] == parent}
    close = [siblings[m] for m in difflib.get_close_matches(leaf, list(siblings), n=n, cutoff=_CUTOFF)]
    if close:
        return close
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=_CUTOFF)


def explain(error: Exception, overrides: list[str], conf_dir: str, config_name: str = "config") -> str | None:
    """One line for a composition error that is a typo (an unknown key or option), else None."""
    text = str(error)
    if m := re.search(r"You must specify '([^']+)'", text):
        group = m.group(1)
        options = re.findall(r"^\t(\S+)$", text, re.M)
        why = (" (it decides how text is segmented, scored and evaluated; a built-in corpus names its own, your "
               "data=jsonl / data=hf does not: docs/data.md#which-task)") if group == "task" else ""
        return f"no {group} chosen{why}: add {group}=NAME, one of {', '.join(options)}"
    if m := re.search(r"Could not find '([^']+)/([^'/]+)'", text):
        group, option = m.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
        close = nearest(option, options)
        hint = f"did you mean {' or '.join(f'{group}={c}' for c in close)}? " if close else ""
        return f"{group}={option}: there is no {group} config {option!r}; {hint}(choices: {', '.join(options)})"
    m = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Could not delete from config\. '([^']+)' does not exist", text)
    if not m:
        return None
    key = m.group(1)
    if key.startswith("hydra.") or key.startswith("hydra/"):
        return None
    others = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    try:
        keys = config_keys(_compose(conf_dir, config_name, others))
    except Exception:  # noqa: BLE001 (another override fails too: Hydra names it)
        return None
    groups = sorted({k for k in keys if "." not in k})
    close = nearest(key, keys if "." in key else groups)
    parent = key.rpartition(".")[0]
    if close:
        hint = f"did you mean {' or '.join(close)}?"
    elif parent and parent in keys:
        hint = f"the keys of {parent}: {', '.join(k for k in keys if k.rpartition('.')[0] == parent)}"
    else:
        hint = f"the top-level keys and groups: {', '.join(groups)}"
    return (f"{key} is not a key of the config; {hint} (phf-train --cfg job prints the config; a new key needs "
            f"a leading +, e.g. +{key}=VALUE)")


def check_overrides(args: Sequence[str], conf_dir: str, config_name: str = "config", prog: str = "phf") -> None:
    """Exit with status 2 and a 'did you mean' line when the command line names a key or an option that does
    not exist; return otherwise (the config composes, or the error is one Hydra explains itself)."""
    overrides = overrides_of(args)
    if not overrides:
        return
    first = _first_values(overrides)
    if first is None:
        return
    try:
        _compose(conf_dir, config_name, first)
    except Exception as e:  # noqa: BLE001 (only a recognised typo is answered here)
        msg = explain(e, first, conf_dir, config_name)
        if msg is not None:
            print(f"{prog}: {msg}", file=sys.stderr)
            sys.exit(2)
