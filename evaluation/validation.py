"""Values checked before anything is written or removed: a seed torch and numpy accept, and method configs
whose every number is finite and inside the range its field declares.

A value that only fails deep inside a run (an integer seed too large for torch's generator, a learning rate
that makes Adam's update overflow) would otherwise end in a traceback after ``--overwrite`` had already
cleared the earlier results. Ranges are declared where a field is defined, so this module never names a
method: ``lr: float = field(default=5e-4, metadata=value_range(high=1.0))``.
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any, Iterator

from editkit.errors import ConfigError, EditkitError

#: the seeds ``torch.manual_seed`` accepts (numpy gets the seed modulo 2**32)
SEED_RANGE = (-(2**63), 2**64 - 1)
_RANGE = "editkit_range"


def value_range(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    """Field metadata: the value must lie in ``[low, high]`` (None: unbounded on that side)."""
    return {_RANGE: (low, high)}


def check_seed(seed: Any) -> None:
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        raise EditkitError(f"--seed must be an integer from -2**63 to 2**64-1 (what torch accepts), got {seed}")


def _numbers(value: Any, where: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{where}.{key}")


def check_config_values(method: str, config: Any) -> None:
    """Every number of ``config`` (a method's dataclass config) is finite and inside its declared range."""
    if not is_dataclass(config):
        return
    for f in fields(config):
        value = getattr(config, f.name)
        for where, number in _numbers(value, f.name):
            if isinstance(number, float) and not math.isfinite(number):
                raise ConfigError(f"{method} {where} must be a finite number, not {number!r}")
        low, high = f.metadata.get(_RANGE, (None, None))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f"from {low} to {high}" if low is not None and high is not None else f"at least {low}" if low is not None else f"at most {high}"
                raise ConfigError(f"{method} {f.name} must be {bounds}, not {value!r}")
