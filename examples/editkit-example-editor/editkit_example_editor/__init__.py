"""An example third-party editkit editor; the entry point in pyproject.toml registers it as ``low-rank``."""

from .editor import LowRankConfig, LowRankEditor

__all__ = ["LowRankConfig", "LowRankEditor"]
