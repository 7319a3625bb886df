"""The unedited model as an editor, so the pre-edit row goes through exactly the same harness path."""

from __future__ import annotations

from typing import Any

from .editor import Editor
from .registry import register_editor
from .requests import EditRequest


#: the method name of the unedited row; reports show it first, as the reference, and never rank it
BASELINE_METHOD = "none"


@register_editor(BASELINE_METHOD)
class UneditedEditor(Editor):
    """Ignores every edit: its scores are the pre-edit baseline (row ``none``)."""

    def edit(self, request: EditRequest) -> dict[str, Any]:
        return {"iterations": 0, "seconds": 0.0}

    def reset(self) -> None:
        pass
