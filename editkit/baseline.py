"""The unedited model as an editor, so the pre-edit row goes through exactly the same harness path."""

from __future__ import annotations

from typing import Any, ClassVar

from .editor import Editor
from .requests import EditRequest

#: the name the baseline is registered under (editkit's pyproject.toml, ``editkit.editors`` entry points)
BASELINE_METHOD = "none"


class UneditedEditor(Editor):
    """Ignores every edit: its scores are the pre-edit baseline (row ``none``)."""

    is_baseline: ClassVar[bool] = True

    def edit(self, request: EditRequest) -> dict[str, Any]:
        return {"iterations": 0, "seconds": 0.0}

    def reset(self) -> None:
        pass
