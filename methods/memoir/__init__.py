"""MEMOIR: residual memory on one down-projection, sparse TopHash masks, overlap-routed per row."""

from editkit.registry import register_editor

from .config import MemoirConfig
from .editor import MemoirEditor

register_editor("memoir")(MemoirEditor)

__all__ = ["MemoirConfig", "MemoirEditor"]
