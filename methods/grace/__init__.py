"""GRACE-like codebook editor."""

from editkit.registry import EditorVariant

from .config import GraceConfig
from .editor import GraceEditor

#: the ``grace`` entry point
GRACE = EditorVariant(GraceEditor)

__all__ = ["GRACE", "GraceConfig", "GraceEditor"]
