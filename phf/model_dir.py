"""A model directory is data, never code.

A model directory (a run's ``final/``, a checkpoint, a download from the Hub) is read by phf-eval,
phf-push, ``model.init_from`` and ``spa.init_from``. Nothing in it may name code to run:

* ``phf_objective.json`` names one of phf's own objectives by its registry name (a config of
  ``conf/objective/``, e.g. ``conditional``), never a ``_target_``; its constructor arguments are plain
  data (numbers, strings, booleans, null, lists of those), each a parameter of that objective's class
  and of the type its signature declares. Files written before this rule (``objective_config`` with a
  ``_target_``) still load when the ``_target_`` is, character for character, the one a phf objective
  config names: it is compared as a string, never imported.
* ``task`` names a config of phf's ``conf/task/`` (a bare name: no path, no ``..``, no separator).
* weights load from safetensors only (``use_safetensors=True``; a ``pytorch_model.bin`` is a pickle
  and is never read).
* a run's ``config.yaml`` found above a checkpoint (``phf-eval checkpoint=RUN/final``) may hold only
  ``_target_`` values that phf's own ``conf/`` names.

Every refusal is a ``ModelDirError`` (a ``ValueError``) naming the file and the field.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import types
import typing
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

OBJECTIVE_GROUP = "objective"
TASK_GROUP = "task"
_NAME = re.compile(r"[A-Za-z0-9_]+")


class ModelDirError(ValueError):
    """A model directory's file that phf refuses to use; the message names the file and the field."""


def _conf() -> Path:
    from phf.entry import conf_dir

    return conf_dir()


def config_names(group: str) -> list[str]:
    """The config names of a group of phf's ``conf/`` (``conf/<group>/<name>.yaml``)."""
    return sorted(p.stem for p in (_conf() / group).glob("*.yaml") if not p.stem.startswith("_"))


def objective_registry() -> dict[str, str]:
    """``{registry name: _target_}`` of phf's objective configs (``conf/objective/*.yaml``)."""
    return dict(_objective_registry(str(_conf())))


@lru_cache(maxsize=4)
def _objective_registry(conf: str) -> tuple[tuple[str, str], ...]:
    import yaml

    out = []
    for p in sorted((Path(conf) / OBJECTIVE_GROUP).glob("*.yaml")):
        target = (yaml.safe_load(p.read_text()) or {}).get("_target_")
        if isinstance(target, str):
            out.append((p.stem, target))
    return tuple(out)


def registry_name(target: str | None) -> str | None:
    """The registry name of the objective config whose ``_target_`` is ``target`` (None if none is)."""
    return next((name for name, t in objective_registry().items() if t == target), None)


@lru_cache(maxsize=4)
def _conf_targets(conf: str) -> frozenset[str]:
    """Every ``_target_`` value phf's own ``conf/`` names (at any depth of any config file)."""
    import yaml

    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "_target_" and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for p in Path(conf).rglob("*.yaml"):
        try:
            walk(yaml.safe_load(p.read_text()))
        except yaml.YAMLError:
            continue
    return frozenset(found)


def check_config_targets(cfg, file: Path) -> None:
    """Refuse a config read from a file (a run's ``config.yaml`` found above a model directory) that names
    a ``_target_`` phf's own ``conf/`` does not (such a config could make phf-eval build anything), or that
    sets an argument one of phf's classes loads as a pickle (its ``pickle_args``: Detoxify's ``checkpoint``)."""
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    allowed = _conf_targets(str(_conf()))

    def walk(node, path: str):
        if isinstance(node, dict):
            target = node.get("_target_")
            if "_target_" in node and target not in allowed:
                raise ModelDirError(f"{file}: {path + '.' if path else ''}_target_ = {target!r} is not a class phf's "
                                    "configs name; phf-eval builds only phf's own objectives, scorers and settings "
                                    "from a file")
            for arg in getattr(get_object(target), "pickle_args", ()) if "_target_" in node else ():
                if node.get(arg) is not None:
                    raise ModelDirError(f"{file}: {path}.{arg} = {node[arg]!r} is a file {target} loads as a pickle, "
                                        "which can run code; a config found beside a model directory may not name one")
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(OmegaConf.to_container(cfg, resolve=False) if not isinstance(cfg, dict) else cfg, "")


def check_task(value: Any, file: Path, field: str = "task") -> str:
    """``value`` if it names a task config of phf's ``conf/task/`` (a bare name, no path)."""
    names = config_names(TASK_GROUP)
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value not in names:
        raise ModelDirError(f"{file}: {field!r} must be the name of one of phf's tasks {names} (a bare name, not a "
                            f"path), got {value!r}; pass task=<name> to choose one")
    return value


def _plain(value: Any) -> bool:
    """Plain data: null, a boolean, an integer, a finite number, a string without an interpolation."""
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and "${" not in value


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` (plain data) has a type the annotation ``hint`` allows."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, list) and all(_accepts(args[0] if args else Any, v) for v in value)
    return False  # a parameter phf cannot fill from plain data


def check_objective_args(name: str, args: Any, file: Path, field: str) -> dict:
    """``args`` if each is a parameter of objective ``name``'s class, plain data of the declared type."""
    from hydra.utils import get_class

    if not isinstance(args, dict):
        raise ModelDirError(f"{file}: {field!r} must be an object of the objective's arguments, got {args!r}")
    cls = get_class(objective_registry()[name])  # phf's own class, named by phf's own config
    params = {k: p for k, p in inspect.signature(cls).parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    hints = typing.get_type_hints(cls.__init__)
    for key, value in args.items():
        if key not in params:
            raise ModelDirError(f"{file}: {field}.{key} is not an argument of phf's {name!r} objective "
                                f"(its arguments: {sorted(params)})")
        ok = _plain(value) or (isinstance(value, list) and all(_plain(v) and v is not None for v in value))
        if not ok or not _accepts(hints.get(key, Any), value):
            raise ModelDirError(f"{file}: {field}.{key} must be plain data of type {hints.get(key, 'any')} "
                                f"(a number, string, boolean, null or a list of those), got {value!r}")
    return dict(args)


def read_json_object(file: Path, error: type[Exception]) -> dict:
    """``file`` parsed as a JSON object (read as data), or ``error`` naming the file and what is wrong."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise error(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{file}: must be a JSON object, got {type(data).__name__}")
    return data


def read_objective_file(model_dir: Path, file_name: str) -> dict | None:
    """The validated ``phf_objective.json`` of ``model_dir`` (None when there is none):
    ``{"objective_name", "objective_args", "task", ...}`` with the registry name, the checked arguments
    and the checked task; the other fields as written (phf-eval reads no other field)."""
    file = Path(model_dir) / file_name
    if not file.is_file():
        return None
    data = read_json_object(file, ModelDirError)
    registry = objective_registry()
    if "objective_name" in data:  # written by this version of phf
        name, field, args = data["objective_name"], "objective_args", data.get("objective_args", {})
        if not isinstance(name, str) or name not in registry:
            raise ModelDirError(f"{file}: 'objective_name' must be one of phf's objectives {sorted(registry)}, got "
                                f"{name!r}; pass objective=<name> to choose one")
    elif "objective_config" in data:  # written by phf before the registry name: map its _target_ to a name
        config, field = data["objective_config"], "objective_config"
        if not isinstance(config, dict) or not isinstance(config.get("_target_"), str):
            raise ModelDirError(f"{file}: 'objective_config' must be an object with the '_target_' of one of phf's "
                                "objectives")
        name = registry_name(config["_target_"])
        if name is None:
            raise ModelDirError(f"{file}: objective_config._target_ = {config['_target_']!r} is not one of phf's "
                                f"objectives ({', '.join(f'{n}: {t}' for n, t in sorted(registry.items()))}); phf "
                                "never builds a class a file names; pass objective=<name> to choose one")
        args = {k: v for k, v in config.items() if k != "_target_"}
    else:
        raise ModelDirError(f"{file}: has no 'objective_name' (one of phf's objectives {sorted(registry)})")
    args = check_objective_args(name, args, file, field)
    task = check_task(data.get("task"), file)
    return {**data, "objective_name": name, "objective_args": args, "task": task}


def check_weights(model_dir: Path) -> None:
    """Refuse a model directory whose weights are not safetensors (a ``pytorch_model.bin`` is a pickle:
    loading it can run code, so phf never reads one)."""
    model_dir = Path(model_dir)
    if (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(p.name for p in model_dir.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    raise ModelDirError(
        f"{model_dir}: no model.safetensors; phf loads weights from safetensors only"
        + (f" ({', '.join(pickles)} would be a pickle, which can run code when loaded, and is never read)"
           if pickles else "")
        + ". To import a model you trust, load it yourself and save it with save_pretrained(DIR, "
          "safe_serialization=True)")


def _embedding_rows(model_dir: Path) -> tuple[int, Path] | None:
    """(rows of the token embedding, its file) from the safetensors headers; None when not found."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        candidates = sorted({model_dir / f for k, f in weight_map.items() if k.endswith(("wte.weight", "embed_tokens.weight"))})
    else:
        candidates = [model_dir / "model.safetensors"]
    for f in candidates:
        if not f.is_file():
            continue
        with safe_open(str(f), framework="pt") as g:
            for key in g.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                if key.endswith(("wte.weight", "embed_tokens.weight")):
                    return g.get_slice(key).get_shape()[0], f
    return None


def check_model_files(model_dir: Path, tokenizer: bool = True) -> None:
    """Refuse a model directory whose files contradict each other, naming the file and what is wrong:
    ``config.json`` unreadable or its ``vocab_size`` not the number of token embeddings in the weights (an
    edited file, or one from another model); with ``tokenizer``: no ``tokenizer.json`` (phf saves every model
    with its tokenizer), or a tokenizer with more tokens than the model has embeddings."""
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        vocab = config["vocab_size"]
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
            raise ValueError(f"'vocab_size' must be a positive integer, got {vocab!r}")
    except FileNotFoundError:
        raise ModelDirError(f"{config_file} is missing: not a saved model directory") from None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{config_file}: not a usable model config ({type(e).__name__}: {e})") from None
    found = _embedding_rows(model_dir)
    if found is not None and found[0] != vocab:
        raise ModelDirError(f"{config_file}: vocab_size is {vocab} but {found[1].name} holds {found[0]} token "
                            "embeddings: the file was edited or belongs to another model; restore the config.json "
                            "saved with these weights")
    if not tokenizer:
        return
    tok_file = model_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise ModelDirError(f"{tok_file} is missing: phf saves every model with its tokenizer (tokenizer.json) and "
                            "loads it from there; copy it back from the run (its checkpoints hold the same file)")
    try:
        from tokenizers import Tokenizer

        n = Tokenizer.from_file(str(tok_file)).get_vocab_size(with_added_tokens=True)
    except Exception as e:  # the Rust library's own exception type
        raise ModelDirError(f"{tok_file}: not a readable tokenizer ({type(e).__name__}: {e})") from None
    if n > vocab:
        raise ModelDirError(f"{tok_file} has {n} tokens but the model ({config_file}: vocab_size {vocab}) only {vocab} "
                            "embeddings: the tokenizer belongs to another model; restore the one saved with it")
