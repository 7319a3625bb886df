"""MEMIT: mass editing of a batch of facts across a range of MLP output projections."""

from editkit.registry import register_editor

from .editor import MEMITConfig, MEMITEditor

register_editor("memit")(MEMITEditor)

__all__ = ["MEMITConfig", "MEMITEditor"]
