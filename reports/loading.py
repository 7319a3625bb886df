"""Reading results directories into what a report draws from.

A report must never show a number it cannot trace back to a file, so every file is read strictly: a
missing, corrupt or incomplete file stops the report with one line naming the file and the line or field.
The per-item files (``results.jsonl``, ``edits.jsonl``, ``routing.jsonl``) are read only when a figure needs
them, so a directory that keeps only its ``summary.json`` (as docs/runs does) still renders its tables.
Every line is checked against its row class in :mod:`editkit.evaluation.schema`, the one the writer uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from editkit.errors import EditkitError
from editkit.evaluation.routing import KINDS
from editkit.evaluation.schedules import Schedule
from editkit.evaluation.schema import EditRow, ResultRow, RoutingRow, SummaryRow, check_row
from editkit.evaluation.store import EDITS, RESULTS, ROUTING, SUMMARY, read_summary

Row = dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What a method's numbers were measured on; numbers share a table only when these agree."""

    model: str
    dataset: str
    stream: str
    schedule: str
    scorers: tuple[str, ...]
    num_edits: int
    #: protocol fields of newer runs (absent in older summaries: no chat template, not tuned)
    chat_template: bool = False
    tuned_on: str | None = None

    @property
    def every(self) -> int | None:
        """K of an ``every:K`` schedule (None for other schedules)."""
        try:
            return Schedule.parse(self.schedule).every
        except EditkitError:
            return None


@dataclass
class MethodRun:
    """One method's results as found in one directory named on the command line."""

    method: str
    source: Path  # the directory named on the command line
    directory: Path | None  # the method's own run directory, if it was kept
    summary: tuple[Row, ...]
    context: Context

    def _read(self, name: str, row_class: type) -> list[Row] | None:
        path = self.directory / name if self.directory is not None else None
        return read_jsonl(path, row_class) if path is not None and path.is_file() else None

    @cached_property
    def results(self) -> list[Row] | None:
        """Per-item scores, or None when the directory did not keep them."""
        return self._read(RESULTS, ResultRow)

    @cached_property
    def edits(self) -> list[Row] | None:
        """Per-edit stats (``seconds`` measured by the harness), or None."""
        return self._read(EDITS, EditRow)

    @cached_property
    def routing(self) -> list[Row] | None:
        """Routing scores, or None for a method that does not route (or a run that predates them)."""
        rows = self._read(ROUTING, RoutingRow)
        for number, row in enumerate(rows or (), 1):
            if row["kind"] not in KINDS:
                raise EditkitError(f"{self.directory / ROUTING}, line {number}: kind '{row['kind']}' is not one of {', '.join(KINDS)}")
        return rows

    def final_summary(self) -> list[Row]:
        """The summary rows of the last scored step: the numbers after the whole stream."""
        last = max(int(r["step"]) for r in self.summary)
        return [r for r in self.summary if int(r["step"]) == last]


def read_jsonl(path: Path, row_class: type) -> list[Row]:
    """Every line of a JSONL file as a dict holding at least the required fields of ``row_class`` (one of
    :mod:`editkit.evaluation.schema`), numbers where numbers belong."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EditkitError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            rows.append(check_row(row_class, row, f"{path}, line {number}"))
    return rows


def load_directory(path: Path) -> list[MethodRun]:
    """The methods of a ``compare`` directory (one sub-directory each) or of a single-method ``run``
    directory, in the order its ``summary.json`` lists them."""
    if not path.exists():
        raise EditkitError(f"{path}: no such directory")
    if not path.is_dir():
        raise EditkitError(f"{path}: not a directory; pass a run or compare directory")
    file = path / SUMMARY
    rows = [check_row(SummaryRow, row, f"{file}, row {i + 1}") for i, row in enumerate(read_summary(path))]
    if not rows:
        raise EditkitError(f"{file}: holds no summary rows")
    by_method: dict[str, list[Row]] = {}
    for row in rows:
        by_method.setdefault(str(row["method"]), []).append(row)
    single = len(by_method) == 1 and (path / RESULTS).is_file()
    return [
        MethodRun(
            method=method,
            source=path,
            directory=path if single else _method_directory(path, method),
            summary=tuple(method_rows),
            context=_context(file, method, method_rows),
        )
        for method, method_rows in by_method.items()
    ]


def _method_directory(path: Path, method: str) -> Path | None:
    candidate = path / method
    return candidate if (candidate / RESULTS).is_file() or (candidate / SUMMARY).is_file() else None


def _context(file: Path, method: str, rows: Sequence[Row]) -> Context:
    values = {}
    for name in ("model", "dataset", "stream", "schedule"):
        seen = list(dict.fromkeys(str(r[name]) for r in rows))
        if len(seen) > 1:
            raise EditkitError(f"{file}: method '{method}' has rows with different {name} ({seen[0]} and {seen[1]})")
        values[name] = seen[0]
    scorers = tuple(sorted({str(r["scorer"]) for r in rows}))
    tuned = next((str(r["tuned_on"]) for r in rows if r.get("tuned_on")), None)
    chat = any(r.get("chat_template") is True for r in rows)
    return Context(scorers=scorers, num_edits=max(int(r["step"]) for r in rows), chat_template=chat, tuned_on=tuned, **values)
