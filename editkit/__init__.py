"""editkit: lifelong editing of language models, every method scored with one protocol."""

from .batching import PromptBatch, encode
from .editor import Editor, EditorConfig, RoutingScores
from .errors import ConfigError, DataError, EditkitError
from .registry import available_editors, get_editor_spec, register_editor
from .requests import EditRequest

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "EditRequest",
    "Editor",
    "EditorConfig",
    "EditkitError",
    "PromptBatch",
    "RoutingScores",
    "available_editors",
    "encode",
    "get_editor_spec",
    "register_editor",
    "__version__",
]
