"""ROME: rank-one model editing of one MLP output projection."""

from editkit.registry import register_editor

from .editor import ROMEConfig, ROMEEditor

register_editor("rome")(ROMEEditor)

__all__ = ["ROMEConfig", "ROMEEditor"]
