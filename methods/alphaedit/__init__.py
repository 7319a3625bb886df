"""AlphaEdit: MEMIT's update projected onto the null space of preserved knowledge."""

from editkit.registry import register_editor

from .editor import AlphaEditConfig, AlphaEditEditor

register_editor("alphaedit")(AlphaEditEditor)

__all__ = ["AlphaEditConfig", "AlphaEditEditor"]
