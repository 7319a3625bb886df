"""The results directory of one method's run (DESIGN §4).

Rows are appended and flushed the moment they exist, so an interrupted run keeps every number it had
produced; ``summary.json`` is written atomically at the end (and after each checkpoint), so a reader never
sees half a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from editkit.errors import EditkitError

from .scorers import Score

CONFIG, RESULTS, EDITS, SUMMARY, STATE = "config.json", "results.jsonl", "edits.jsonl", "summary.json", "state"
#: written only for editors that report routing scores (see evaluation/routing.py)
ROUTING = "routing.jsonl"
RUN_FILES = (CONFIG, RESULTS, EDITS, SUMMARY, ROUTING)


@dataclass(frozen=True)
class SummaryRow:
    method: str
    metric: str
    scorer: str
    schedule: str
    step: int
    mean: float
    n: int
    model: str
    dataset: str
    stream: str


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse to mix a new run into an old one; with ``overwrite`` clear only editkit's own files."""
    if path.exists() and not path.is_dir():
        raise EditkitError(f"--out {path}: exists and is not a directory")
    if path.is_dir():
        existing = [p for p in path.rglob("*") if p.is_file() and p.name in RUN_FILES]
        if existing and not overwrite:
            raise EditkitError(f"--out {path}: already holds results ({existing[0]}); choose another --out or pass --overwrite")
        for p in existing:
            p.unlink()
    path.mkdir(parents=True, exist_ok=True)


class RunWriter:
    """Writes one method's run directory; ``context`` (model, dataset, stream, schedule) goes on every row."""

    def __init__(self, directory: Path, config: dict[str, Any], context: dict[str, str]):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / CONFIG, config)
        self.context = context
        self._results = open(directory / RESULTS, "a", encoding="utf-8")
        self._edits = open(directory / EDITS, "a", encoding="utf-8")
        self._routing = None  # opened on the first routing row: most editors never write one

    @property
    def state_dir(self) -> Path:
        return self.directory / STATE

    def _append(self, handle, row: dict[str, Any]) -> None:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()

    def edit(self, step: int, edit_id: str, stats: dict[str, Any]) -> None:
        row = {"method": self.context["method"], "step": step, "edit_id": edit_id}
        row.update({k: _jsonable(v) for k, v in stats.items()})
        self._append(self._edits, row)

    def routing(self, rows: Iterable[dict[str, Any]]) -> None:
        """Routing-score rows (step, edit_id, kind, score, threshold, score_name), with the run's context."""
        if self._routing is None:
            self._routing = open(self.directory / ROUTING, "a", encoding="utf-8")
        for row in rows:
            self._routing.write(json.dumps({"method": self.context["method"], **row, **self._context_fields()}, ensure_ascii=False) + "\n")
        self._routing.flush()

    def _context_fields(self) -> dict[str, str]:
        return {k: v for k, v in self.context.items() if k != "method"}

    def scores(self, scores: Iterable[Score]) -> None:
        for s in scores:
            row = {"method": self.context["method"], **asdict(s), **self._context_fields()}
            self._results.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._results.flush()
        os.fsync(self._results.fileno())

    def summary(self, rows: Sequence[SummaryRow]) -> None:
        write_json_atomic(self.directory / SUMMARY, [asdict(r) for r in rows])

    def close(self) -> None:
        self._results.close()
        self._edits.close()
        if self._routing is not None:
            self._routing.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def summarize(scores: Sequence[Score], context: dict[str, str], final_step: int, per_checkpoint: bool) -> list[SummaryRow]:
    """Means over requests. ``per_checkpoint`` keeps one row per step (final, every:K); else all
    scores are pooled into one row at ``final_step`` (immediate: each edit was scored at its own step)."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    for s in scores:
        step = s.step if per_checkpoint else final_step
        groups.setdefault((s.metric, s.scorer, step), []).append(s.value)
    return [
        SummaryRow(
            method=context["method"],
            metric=metric,
            scorer=scorer,
            schedule=context["schedule"],
            step=step,
            mean=sum(values) / len(values),
            n=len(values),
            model=context["model"],
            dataset=context["dataset"],
            stream=context["stream"],
        )
        for (metric, scorer, step), values in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0]))
    ]


def read_summary(path: Path) -> list[dict[str, Any]]:
    file = path / SUMMARY if path.is_dir() else path
    if not file.is_file():
        raise EditkitError(f"{path}: no {SUMMARY} here; is this an editkit run directory?")
    try:
        rows = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise EditkitError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise EditkitError(f"{file}: expected a list of summary rows")
    return rows
