"""AlphaEdit: MEMIT's update projected onto the null space of preserved knowledge."""

from editkit.registry import EditorVariant

from .editor import AlphaEditConfig, AlphaEditEditor

#: the ``alphaedit`` entry point
ALPHAEDIT = EditorVariant(AlphaEditEditor)

__all__ = ["ALPHAEDIT", "AlphaEditConfig", "AlphaEditEditor"]
