"""Validation helpers shared by the methods' config dataclasses, so every method rejects bad values alike."""

from __future__ import annotations

import math

import torch

from .errors import ConfigError, EditkitError
from .layers import down_proj_path, scaled_layer


def split_pair(item: str, option: str = "--set", form: str = "KEY=VALUE") -> tuple[str, str]:
    """``KEY=VALUE`` (or another ``form``) of a command-line option as (key, value); one-line error otherwise."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise EditkitError(f"{option} {item}: expected {form}")
    return key.strip(), value


def is_number(value: object) -> bool:
    """A finite int or float (bools excluded: ``--set lr=true`` is a mistake, not 1.0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_layer(value: object, method: str) -> int | str | None:
    """A ``layer`` option: None (the official depth), a block index, or a dotted module path."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ConfigError(f"{method} layer must be None, an integer or a dotted module path, not ''")
        return int(text) if text.lstrip("-").isdigit() else text
    if value is not None and not is_integer(value):
        raise ConfigError(f"{method} layer must be None, an integer or a module path, not {value!r}")
    return value


def layer_module_path(model: torch.nn.Module, layer: int | str | None, official: tuple[int, int]) -> str:
    """The module a ``layer`` option names on ``model``; ``official`` = (layer, of how many) for None."""
    if isinstance(layer, str):
        return layer
    index = layer if layer is not None else scaled_layer(official[0], official[1], model)
    return down_proj_path(model, index)
