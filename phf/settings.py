"""Typed settings from config nodes: the one binder every settings dataclass is built with.

A settings group of the config (``trainer``, ``task.eval`` and its parts, ``spa.train``) is a dataclass
whose fields are the YAML keys. ``bind(cls, node, where)`` turns the node into that class once, at the
entry point, so the modules below receive typed values instead of the config:

* a ``_target_`` in the node names the class to build; it must be ``cls`` or a subclass of it (the
  config group is the registry, as for every other ``_target_``), otherwise ``cls`` is built;
* an unknown key is refused, naming it, where it was found and the known keys; a missing required key
  is refused naming ``where``;
* nested config nodes arrive as plain lists and dicts (resolved), unless ``values`` passes a node as
  it is (e.g. a scorer config that is built later);
* with ``keep_missing`` a key that is still ``???`` arrives as ``omegaconf.MISSING`` (the settings
  class decides when that is an error, e.g. ``Trainer.check_set`` before training).

This module imports no torch: the console scripts may build settings before the job's modules load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

#: Hydra's instantiate keys, which are no settings
HYDRA_KEYS = ("_target_", "_convert_", "_recursive_", "_partial_")


def _settings_class(cls: type[T], target: Any, where: str) -> type[T]:
    if target is None:
        return cls
    from hydra.utils import get_class

    try:
        found = get_class(str(target))
    except Exception as e:  # Hydra raises ImportError or ValueError, wrapped in its own exceptions
        raise ValueError(f"{where}._target_: cannot import {target!r} ({type(e).__name__}); expected "
                         f"{cls.__module__}.{cls.__qualname__}") from None
    if not (isinstance(found, type) and issubclass(found, cls)):
        raise ValueError(f"{where}._target_ must name {cls.__module__}.{cls.__qualname__} (or a subclass), "
                         f"got {target!r}")
    return found


def plain_values(node: Any, keep_missing: bool = False) -> dict:
    """The node's keys as plain Python values (resolved); ``???`` as ``MISSING`` with ``keep_missing``."""
    from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    if node is None:
        return {}
    if not isinstance(node, DictConfig):
        if not isinstance(node, Mapping):
            raise ValueError(f"expected a mapping of settings, got {type(node).__name__}: {node!r}")
        return dict(node)
    out = {}
    for key in node:
        try:
            value = node[key]
        except (MissingMandatoryValue, InterpolationToMissingValueError):
            if not keep_missing:
                raise
            out[key] = MISSING
            continue
        out[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
    return out


def bind(cls: type[T], node: Any, where: str, *, keep_missing: bool = False, **values) -> T:
    """``cls`` (or the subclass the node's ``_target_`` names) built from the config ``node`` (a
    DictConfig, a mapping or None) with ``values`` on top; errors name ``where`` (see the module doc)."""
    d = plain_values(node, keep_missing)
    d.update(values)
    target = _settings_class(cls, d.get("_target_"), where)
    for key in HYDRA_KEYS:
        d.pop(key, None)
    known = {f.name for f in dataclasses.fields(target) if f.init}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    try:
        return target(**d)
    except TypeError as e:  # a required key is missing
        raise ValueError(f"{where}: {e}") from None
