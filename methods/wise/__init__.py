"""WISE-like side-memory editor (one registration line per variant)."""

from editkit.registry import register_editor

from .config import WiseConfig
from .editor import WiseEditor

register_editor("wise")(WiseEditor)

__all__ = ["WiseConfig", "WiseEditor"]
