"""GRACE-like codebook editor (one registration line)."""

from editkit.registry import register_editor

from .config import GraceConfig
from .editor import GraceEditor

register_editor("grace")(GraceEditor)

__all__ = ["GraceConfig", "GraceEditor"]
