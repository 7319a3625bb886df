"""Locate-then-edit maths shared by ROME, MEMIT and AlphaEdit (keys, v*, second moments, weight updates)."""

from .config import LocateConfig
from .editor import LocateEditor, scaled_layers
from .stats import second_moments

__all__ = ["LocateConfig", "LocateEditor", "scaled_layers", "second_moments"]
