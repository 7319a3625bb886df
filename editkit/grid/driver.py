"""The grid driver: which cells still need to run, in what order, how often to retry, and ``grid.json``.

The driver is the only writer of ``ROOT/grid.json`` (atomically, after every change). It validates the
whole plan before it touches ROOT; skips every complete cell, resumes a cell that has a checkpoint, runs a
group's ``none`` cell before the group's method cells (they reuse its reference predictions), retries a
failed cell up to ``retries`` times and then marks it failed without stopping the others.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import editkit
from editkit.errors import EditkitError

from .cell import REFERENCES, TOKEN, cell_dir, install, now, pack
from .plan import Cell, Plan, check_cells

try:
    import fcntl
except ImportError:  # Windows: grids are not locked there
    fcntl = None  # type: ignore[assignment]

RECORD = "grid.json"
GRID_LOCK = ".grid.lock"
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


@dataclass
class GridResult:
    root: Path
    record: dict[str, Any]
    ran: list[str]  # cells run (or resumed) by this call

    @property
    def failed(self) -> list[str]:
        return [name for name, c in self.record["cells"].items() if c["status"] == FAILED]


def read_record(root: Path) -> dict[str, Any] | None:
    file = root / RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        record["plan_hash"], record["cells"]  # noqa: B018 - the fields every grid.json has
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise EditkitError(f"{file}: not a grid record editkit wrote") from None
    return record


def write_record(root: Path, record: dict[str, Any]) -> None:
    tmp = root / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, root / RECORD)


def check_same_plan(record: dict[str, Any] | None, plan: Plan, root: Path, extend: bool) -> None:
    """A ROOT holds one plan's cells: a changed plan is refused, unless ``extend`` and it only adds cells."""
    if record is None or record["plan_hash"] == plan.hash:
        return
    if not extend:
        raise EditkitError(
            f"--out {root}: holds the cells of another plan (hash {record['plan_hash'][:12]}, this one {plan.hash[:12]}); "
            "pass --extend if it only adds cells, or choose another --out"
        )
    keys = {c.name: c.key for c in plan.cells}
    for name, old in record["cells"].items():
        if name not in keys:
            raise EditkitError(f"--extend: cell {name} of {root / RECORD} is not in the new plan; --extend only adds cells")
        if old.get("key") != keys[name]:
            raise EditkitError(f"--extend: cell {name} changed (its method config or setup); --extend only adds cells")


def is_complete(root: Path, cell: Cell) -> bool:
    from editkit.evaluation.checkpoints import read_run_checkpoint
    from editkit.evaluation.store import SUMMARY

    directory = cell_dir(root, cell.name)
    try:
        done = read_run_checkpoint(directory).complete and (directory / SUMMARY).is_file()
    except EditkitError:
        return False
    return done and (not cell.is_none or (directory / REFERENCES).is_file())


def has_checkpoint(root: Path, cell: Cell) -> bool:
    from editkit.evaluation.checkpoints import read_run_checkpoint
    from editkit.evaluation.store import INVOCATION

    directory = cell_dir(root, cell.name)
    try:
        return read_run_checkpoint(directory).step > 0 and (directory / INVOCATION).is_file()
    except EditkitError:
        return False


class GridLock:
    """One driver per ROOT (the cells inside take their own run locks)."""

    def __init__(self, root: Path):
        self.path = root / GRID_LOCK
        self.fd: int | None = None

    def __enter__(self) -> "GridLock":
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EditkitError(f"--out {self.path.parent}: a grid is already running here (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *_: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _entry(cell: Cell, old: dict[str, Any] | None) -> dict[str, Any]:
    base = {"status": PENDING, "host": None, "device": None, "pid": None, "start": None, "end": None, "tries": 0, "error": None}
    kept = {k: v for k, v in (old or {}).items() if k in base}
    return {
        "method": cell.method, "variant": cell.variant, "group": cell.group, **cell.labels,
        "key": cell.key, **base, **kept,
    }  # fmt: skip


def run_grid(
    plan: Plan,
    root: Path,
    executor: str = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    retries: int = 1,
    extend: bool = False,
    progress: bool = True,
    stage: bool = False,
) -> GridResult:
    """Run every cell of ``plan`` that is not complete under ``root``; see the module docstring."""
    from tqdm.auto import tqdm

    if retries < 0:
        raise EditkitError(f"--retries must be at least 0, got {retries}")
    if max_parallel is not None and max_parallel < 1:
        raise EditkitError(f"--max-parallel must be at least 1, got {max_parallel}")
    if executor not in ("local", "ray"):
        raise EditkitError(f"--executor {executor}: expected local or ray")
    check_cells(plan)
    if root.exists() and not root.is_dir():
        raise EditkitError(f"--out {root}: exists and is not a directory")
    record = read_record(root) if root.is_dir() else None
    check_same_plan(record, plan, root, extend)
    # every input is checked: only now is ROOT touched
    root.mkdir(parents=True, exist_ok=True)
    with GridLock(root):
        token = secrets.token_hex(16)
        (root / TOKEN).write_text(token + "\n", encoding="utf-8")
        old_cells = (record or {}).get("cells", {})
        record = {"editkit": editkit.__version__, "plan": plan.data, "plan_hash": plan.hash, "cells": {c.name: _entry(c, old_cells.get(c.name)) for c in plan.cells}}
        cells = {c.name: c for c in plan.cells}
        todo: list[str] = []
        for cell in plan.cells:
            entry = record["cells"][cell.name]
            if is_complete(root, cell):
                entry["status"] = DONE
            else:
                entry.update(status=PENDING, error=None, tries=0)
                todo.append(cell.name)
        write_record(root, record)
        slots = max_parallel or (max(1, (os.cpu_count() or 1) // max(1, plan.data["threads"])) if executor == "local" else None)
        if executor == "local":
            from .executors import LocalExecutor

            runner: Any = LocalExecutor(root, slots)
        else:
            from .executors import RayExecutor

            runner = RayExecutor(address, max_parallel, stage=stage)
        total, done = len(plan.cells), len(plan.cells) - len(todo)
        bar = tqdm(total=total, initial=done, desc="grid", unit="cell", disable=not progress, dynamic_ncols=True)
        running: set[str] = set()
        ran: list[str] = []
        try:
            while todo or running:
                for name in _ready(todo, cells, record, slots, len(running)):
                    todo.remove(name)
                    running.add(name)
                    ran.append(name)
                    entry = record["cells"][name]
                    entry.update(status=RUNNING, tries=entry["tries"] + 1, start=now(), end=None, error=None)
                    runner.submit(_task(root, cells[name], token, entry["tries"], runner))
                bar.update(_fail_blocked(todo, cells, record))
                write_record(root, record)
                if not running:
                    break
                for outcome in runner.wait():
                    name = outcome["name"]
                    running.discard(name)
                    entry = record["cells"][name]
                    entry.update(host=outcome.get("host"), pid=outcome.get("pid"), device=outcome.get("device"), end=outcome.get("end"))
                    if outcome.get("start"):
                        entry["start"] = outcome["start"]
                    if outcome["ok"]:
                        if outcome.get("files") is not None:
                            install(outcome["files"], cell_dir(root, name))
                        entry.update(status=DONE, error=None)
                        bar.update(1)
                    elif entry["tries"] <= retries:
                        entry.update(status=PENDING, error=outcome["error"])
                        todo.insert(0, name)
                    else:
                        entry.update(status=FAILED, error=outcome["error"])
                        bar.update(1)
                    bar.set_postfix(running=len(running), failed=sum(c["status"] == FAILED for c in record["cells"].values()))
                write_record(root, record)
        finally:
            bar.close()
            runner.close()
            for entry in record["cells"].values():
                if entry["status"] == RUNNING:  # interrupted: it resumes from its checkpoint next time
                    entry["status"] = PENDING
            write_record(root, record)
    return GridResult(root, record, ran)


def _ready(todo: Sequence[str], cells: dict[str, Cell], record: dict[str, Any], slots: int | None, running: int) -> list[str]:
    """Cells that may start now: a method cell once its group's ``none`` cell is done."""
    free = len(todo) if slots is None else max(0, slots - running)
    ready = []
    for name in todo:
        if len(ready) >= free:
            break
        cell = cells[name]
        if cell.is_none or record["cells"][cell.group]["status"] == DONE:
            ready.append(name)
    return ready


def _fail_blocked(todo: list[str], cells: dict[str, Cell], record: dict[str, Any]) -> int:
    """Mark failed the method cells whose ``none`` cell failed (they need its reference predictions)."""
    blocked = 0
    for name in list(todo):
        group = cells[name].group
        if not cells[name].is_none and record["cells"][group]["status"] == FAILED:
            todo.remove(name)
            record["cells"][name].update(status=FAILED, error=f"its unedited cell {group} failed")
            blocked += 1
    return blocked


def _task(root: Path, cell: Cell, token: str, tries: int, runner: Any) -> dict[str, Any]:
    """What a worker needs. A worker that cannot see ROOT gets the group's reference predictions and a
    checkpointed cell's files with it (only the Ray executor's workers can be elsewhere)."""
    from .executors import RayExecutor

    resume = has_checkpoint(root, cell)
    task: dict[str, Any] = {"cell": cell.to_dict(), "root": str(root.resolve()), "token": token, "resume": resume, "try": tries}
    if isinstance(runner, RayExecutor):
        if not cell.is_none:
            task["references"] = (cell_dir(root, cell.group) / REFERENCES).read_bytes()
        task["files"] = pack(cell_dir(root, cell.name)) if resume else {}
    return task


def status_table(root: Path) -> str:
    """``editkit grid --status ROOT``: one line per cell."""
    from editkit.reports.formats import markdown_grid

    record = read_record(root)
    if record is None:
        raise EditkitError(f"{root}: no {RECORD} here, so not a grid root")
    rows = []
    for name, c in record["cells"].items():
        rows.append([name, c["status"], str(c["tries"]), str(c.get("host") or "-"), str(c.get("device") or "-"), str(c.get("start") or "-"), str(c.get("end") or "-"), str(c.get("error") or "")])
    counts = {s: sum(c["status"] == s for c in record["cells"].values()) for s in (DONE, RUNNING, PENDING, FAILED)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    header = ["cell", "status", "tries", "host", "device", "start", "end", "error"]
    return markdown_grid(header, rows) + f"\n{len(rows)} cells: {summary}; plan {record['plan_hash'][:12]}\n"
