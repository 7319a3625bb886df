"""MEMOIR: residual memory on one down-projection, sparse TopHash masks, overlap-routed per row.

``memoir`` is the faithful method; ``memoir+`` adds the options beyond the paper (interference protection,
the feature re-ranking router and decay of the edit's own columns only; docs/tuning/memoir-plus.md).
"""

from editkit.registry import EditorVariant

from .config import MemoirConfig
from .editor import PLUS, MemoirEditor

#: the ``memoir`` entry point; first in the default comparison
MEMOIR = EditorVariant(MemoirEditor, default_rank=0)
#: the ``memoir+`` entry point: the same editor with the options beyond the paper on
MEMOIR_PLUS = EditorVariant(MemoirEditor, dict(PLUS))

__all__ = ["MEMOIR", "MEMOIR_PLUS", "MemoirConfig", "MemoirEditor"]
