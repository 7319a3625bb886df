"""Running one cell, wherever a worker runs: in a local worker process or in a Ray task on another machine.

A worker that sees the grid's ROOT (the driver's token file is there) writes the cell's run directory in
place, so a killed cell resumes from its last checkpoint. A worker that does not (no shared filesystem)
runs the cell in a private temporary directory and returns the directory's files — the results and the
editor's state, never the model — for the driver to install atomically (:func:`install`).

A ``none`` cell also saves the unedited model's reference predictions (``references.pt``); the method
cells of its group load them instead of computing them again, so every cell's locality is measured against
the very same tensors.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from editkit.errors import EditkitError

from .plan import Cell

CELLS = "cells"
TOKEN = "grid.token"
REFERENCES = "references.pt"
#: files a worker never ships back: the lock is the worker's own
NOT_SHIPPED = (".editkit.lock",)


def cell_dir(root: Path, name: str) -> Path:
    return root / CELLS / name


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sees_root(root: Path, token: str) -> bool:
    try:
        return (root / TOKEN).read_text(encoding="utf-8").strip() == token
    except OSError:
        return False


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run ``task['cell']``; never raises: a failure is returned as ``ok: False`` with a one-line error (the
    traceback goes to the worker's stderr, i.e. the cell's log)."""
    cell = Cell.from_dict(task["cell"])
    root = Path(task["root"])
    outcome: dict[str, Any] = {"name": cell.name, "host": socket.gethostname(), "pid": os.getpid(), "start": now(), "files": None}
    in_place = not task.get("stage", False) and sees_root(root, task["token"])
    staging = None
    try:
        if in_place:
            directory = cell_dir(root, cell.name)
            references = (cell_dir(root, cell.group) / REFERENCES).read_bytes() if not cell.is_none else None
        else:
            staging = Path(tempfile.mkdtemp(prefix="editkit-cell-"))
            directory = staging / cell.name
            unpack(task.get("files") or {}, directory)
            references = task.get("references")
        outcome["device"] = run_cell(cell, directory, bool(task.get("resume")), references)
        if not in_place:
            outcome["files"] = pack(directory)
        outcome["ok"], outcome["error"] = True, None
    except BaseException as exc:  # noqa: BLE001 - a worker reports every failure to the driver
        traceback.print_exc()
        message = str(exc) if isinstance(exc, EditkitError) else f"{type(exc).__name__}: {exc}"
        outcome["ok"], outcome["error"] = False, (message.strip().splitlines() or [type(exc).__name__])[0]
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    outcome["end"] = now()
    return outcome


def run_cell(cell: Cell, directory: Path, resume: bool, references: bytes | None) -> str:
    """One cell through the API: validate everything, then open its directory, then edit and score.
    Returns the device it ran on."""
    import torch

    from editkit import api

    setup = api.Setup(**cell.setup)
    choice = api.MethodChoice(cell.method, cell.overrides)
    validated = api.validate(setup, [choice])
    if references is not None:
        validated.harness.use_reference_predictions(torch.load(io.BytesIO(references), weights_only=True))
    config = api.RunConfig(choice, setup, directory, overwrite=True, resume=resume)
    prepared = api.open_output(validated, "run", directory, True, resume, api.run_invocation(config))
    with prepared.lock:
        harness = prepared.harness
        if cell.is_none:
            buffer = io.BytesIO()
            torch.save(harness.reference_predictions(), buffer)
            write_bytes_atomic(directory / REFERENCES, buffer.getvalue())
        spec, method_config = prepared.runs[0]
        harness.run(spec, method_config, directory, resume=resume)
    return validated.loaded.device


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pack(directory: Path) -> dict[str, bytes]:
    """Every file of a run directory (relative POSIX path → bytes)."""
    if not directory.is_dir():
        return {}
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in NOT_SHIPPED}


def unpack(files: dict[str, bytes], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = directory / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise EditkitError(f"refusing to write {name} outside {directory}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def install(files: dict[str, bytes], target: Path) -> None:
    """Replace ``target`` by a directory of ``files`` in one rename, so a reader sees the old cell or the
    new one, never a mix."""
    incoming = target.with_name(f".{target.name}.incoming-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(incoming, ignore_errors=True)
    unpack(files, incoming)
    if target.exists():
        os.replace(target, old)
    os.replace(incoming, target)
    shutil.rmtree(old, ignore_errors=True)
