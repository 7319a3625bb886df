"""Fine-tuning baseline (ft, ft-l, ft-m): one class, three entry points."""

from editkit.registry import EditorVariant

from .config import FTConfig
from .editor import FTEditor

#: ``ft`` (FT-M, the papers' stronger FT baseline) is second in the default comparison
FT = EditorVariant(FTEditor, {"objective": "ft-m"}, default_rank=1)
FT_M = EditorVariant(FTEditor, {"objective": "ft-m"})
FT_L = EditorVariant(FTEditor, {"objective": "ft-l"})

__all__ = ["FT", "FT_L", "FT_M", "FTConfig", "FTEditor"]
