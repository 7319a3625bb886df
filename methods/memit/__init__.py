"""MEMIT: mass editing of a batch of facts across a range of MLP output projections."""

from editkit.registry import EditorVariant

from .editor import MEMITConfig, MEMITEditor

#: the ``memit`` entry point
MEMIT = EditorVariant(MEMITEditor)

__all__ = ["MEMIT", "MEMITConfig", "MEMITEditor"]
