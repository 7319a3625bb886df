"""Checkpoints of one method's run, so a killed run (even by ``kill -9``) can be resumed exactly.

Every few edits the harness saves the editor's state into ``checkpoints/step-<S>/`` and only then, after
every row of steps ≤ S is on disk, points ``checkpoint.json`` at it (written atomically: temp file +
rename). A checkpoint therefore always names a state and a set of rows that belong together. On resume the
rows of later steps (written after the last checkpoint, possibly half a line) are dropped, the state is
loaded and the stream continues from step S + 1: the finished run has every row exactly once, as an
uninterrupted run would.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editkit.errors import EditkitError

from .store import CHECKPOINT, EDITS, RESULTS, ROUTING, STATE, TIMINGS, write_json_atomic

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    step: int  # edits applied and fully written
    state: Path | None  # the editor state after them (None at step 0)
    complete: bool  # the method's run finished


def read_checkpoint(directory: Path) -> Checkpoint:
    """The last checkpoint of a method directory; step 0 when it has none (the run starts over)."""
    file = directory / CHECKPOINT
    if not file.is_file():
        return Checkpoint(0, None, False)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        step, state, complete = int(data["step"]), data["state"], bool(data["complete"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise EditkitError(f"{file}: not a checkpoint editkit wrote; cannot resume from it") from None
    path = directory / state
    if not path.is_dir():
        raise EditkitError(f"{file}: its state {path} is missing; cannot resume from it")
    return Checkpoint(step, path, complete)


def save_checkpoint(directory: Path, step: int, editor: Any, complete: bool = False) -> None:
    """Save the editor's state after ``step`` and point ``checkpoint.json`` at it; older states go."""
    if complete:
        state = directory / STATE
        editor.save_state(state)
    else:
        state = directory / CHECKPOINTS / f"step-{step}"
        tmp = state.with_name(state.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        editor.save_state(tmp)
        shutil.rmtree(state, ignore_errors=True)
        os.replace(tmp, state)
    write_json_atomic(directory / CHECKPOINT, {"step": step, "state": state.relative_to(directory).as_posix(), "complete": complete})
    for old in (directory / CHECKPOINTS).glob("step-*"):
        if old != state:
            shutil.rmtree(old, ignore_errors=True)
    if complete:
        shutil.rmtree(directory / CHECKPOINTS, ignore_errors=True)


def _rows_up_to(file: Path, step: int) -> list[dict[str, Any]]:
    """The rows of one of the run's JSONL files up to ``step``, skipping any torn line."""
    rows = []
    with open(file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the line a kill cut short
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                rows.append(row)
    return rows


def results_up_to(directory: Path, step: int) -> list[dict[str, Any]]:
    """The results rows of steps ≤ ``step``, read only: a finished run's summary is rebuilt from them."""
    file = directory / RESULTS
    return _rows_up_to(file, step) if file.is_file() else []


def keep_rows_up_to(directory: Path, step: int) -> list[dict[str, Any]]:
    """Drop every row after ``step`` (and any torn last line) from the run's JSONL files; return the
    kept results rows, from which the summary of the resumed run is rebuilt."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for name in (RESULTS, EDITS, ROUTING, TIMINGS):
        file = directory / name
        if not file.is_file():
            continue
        kept[name] = _rows_up_to(file, step)
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept[name]), encoding="utf-8")
        os.replace(tmp, file)
    return kept.get(RESULTS, [])
