"""Config nodes of the SPA guards as frozen dataclasses: an unknown key is named, not a TypeError."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


def bind(cls: type[T], node: DictConfig | dict | None, where: str) -> T:
    """``cls(**node)``; ``node`` None or absent gives the dataclass defaults. ``where`` names the
    config key in errors (e.g. ``spa.pairs``)."""
    d = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {where} keys {unknown}; known: {sorted(known)}")
    return cls(**d)
