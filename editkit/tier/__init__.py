"""The method middle tier: what every editor of one kind needs, written once, so a method folder holds only
its own maths (the way peft's ``BaseTuner``/``BaseTunerLayer`` carry what every adapter needs).

- :class:`ModuleEditor`: editors that act at one module and never change base weights (MEMOIR, GRACE,
  WISE): the module from the official depth, the split forward, per-row routing, state checks.
- :class:`WeightEditor`: editors that change base weights (FT, ROME, MEMIT, AlphaEdit): snapshot and
  bit-for-bit restore, state I/O of the edited weight, a float32 master copy on fp16/bf16 models.
- :class:`FastPath`: the one "check the shortcut against the full forward once, then trust it" both tiers
  and the locate-then-edit family's v* loop use.
"""

from .common import FAST_MODES, FULL, PACKED, PADDED, FastPath, require_tokens, target_positions
from .module_editor import ModuleEditor
from .weight_editor import WeightEditor

__all__ = ["FAST_MODES", "FULL", "PACKED", "PADDED", "FastPath", "ModuleEditor", "WeightEditor", "require_tokens", "target_positions"]
