"""Fine-tuning baseline (ft, ft-l, ft-m): one class, three registered names."""

from editkit.registry import register_editor

from .config import FTConfig
from .editor import FTEditor

register_editor("ft", objective="ft-m")(FTEditor)
register_editor("ft-m", objective="ft-m")(FTEditor)
register_editor("ft-l", objective="ft-l")(FTEditor)

__all__ = ["FTConfig", "FTEditor"]
