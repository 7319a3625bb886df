"""MEMOIR: residual memory on one down-projection, sparse TopHash masks, overlap-routed per row."""

from editkit.registry import EditorVariant

from .config import MemoirConfig
from .editor import MemoirEditor

#: the ``memoir`` entry point; first in the default comparison
MEMOIR = EditorVariant(MemoirEditor, default_rank=0)

__all__ = ["MEMOIR", "MemoirConfig", "MemoirEditor"]
