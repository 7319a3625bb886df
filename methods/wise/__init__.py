"""WISE-like side-memory editor."""

from editkit.registry import EditorVariant

from .config import WiseConfig
from .editor import WiseEditor

#: the ``wise`` entry point (WISE-Merge by default; ``--set wise.retrieve=true`` for WISE-Retrieve)
WISE = EditorVariant(WiseEditor)

__all__ = ["WISE", "WiseConfig", "WiseEditor"]
