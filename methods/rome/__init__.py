"""ROME: rank-one model editing of one MLP output projection."""

from editkit.registry import EditorVariant

from .editor import ROMEConfig, ROMEEditor

#: the ``rome`` entry point
ROME = EditorVariant(ROMEEditor)

__all__ = ["ROME", "ROMEConfig", "ROMEEditor"]
