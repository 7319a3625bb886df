"""Checkpoints of one method's run, so a killed run (even by ``kill -9``) can be resumed exactly, and only
when what it continues is intact.

Every few edits the harness saves the editor's state into ``checkpoints/step-<S>/`` and only then, after
every row of steps ≤ S is on disk, points ``checkpoint.json`` at it (written atomically: temp file +
rename). The checkpoint records the sha256 of each file of the state and, for each row file (results,
edits, routing, timings), how many rows and bytes it held at step S and their sha256. On resume each is
checked before anything is written: a damaged state, or a row file with rows missing or changed before
the checkpoint, is refused in one line; after the checkpoint only rows of later steps may follow, the last
one possibly torn by the kill. Those later rows are dropped, the state is loaded and the stream continues
from step S + 1: the finished run has every row exactly once, as an uninterrupted run would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from editkit.errors import EditkitError
from editkit.hashing import sha256_file

from .store import CHECKPOINT, CHECKPOINTS, CONFIG, JSONL_FILES, RESULTS, STATE, RunLock, digest_prefix, open_for_resume, write_json_atomic


@dataclass(frozen=True)
class Checkpoint:
    step: int  # edits applied and fully written
    state: Path | None  # the editor state after them (None at step 0)
    complete: bool  # the method's run finished
    #: per row file: rows, bytes and sha256 it held at ``step`` (absent: the file held nothing yet)
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


START = Checkpoint(0, None, False)


def read_checkpoint(directory: Path, num_edits: int) -> Checkpoint:
    """The last checkpoint of a method directory, verified against the state and row files it names (step 0
    when it has none: the run starts over, and every row already there must be one it will write again)."""
    file = directory / CHECKPOINT
    if not file.exists():
        checkpoint = START
    else:
        checkpoint = _parse(file, directory, num_edits)
        if checkpoint.state is not None:
            _check_state(file, checkpoint.state, _state_files(file))
    for name in JSONL_FILES:
        _check_rows(directory / name, checkpoint.files.get(name), checkpoint.step, checkpoint.complete)
    return checkpoint


def _parse(file: Path, directory: Path, num_edits: int) -> Checkpoint:
    unusable = f"{file}: not a checkpoint editkit wrote; cannot resume from it"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        step, state, complete, files = data["step"], data["state"], data["complete"], data["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        raise EditkitError(unusable) from None
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(complete, bool) or not isinstance(files, dict):
        raise EditkitError(unusable)
    if complete and step != num_edits or not complete and not 0 < step < num_edits:
        raise EditkitError(f"{file}: step {step} is not a checkpoint of this run's stream of {num_edits} edits; cannot resume from it")
    expected = STATE if complete else f"{CHECKPOINTS}/step-{step}"
    if state != expected:
        raise EditkitError(f"{file}: names the state '{state}', not {expected}; cannot resume from it")
    for name, mark in files.items():
        if name not in JSONL_FILES or not isinstance(mark, dict) or not all(
            isinstance(mark.get(k), t) and not isinstance(mark.get(k), bool) for k, t in (("rows", int), ("bytes", int), ("sha256", str))
        ):
            raise EditkitError(unusable)
    return Checkpoint(step, directory / state, complete, files)


def _state_files(file: Path) -> dict[str, str]:
    data = json.loads(file.read_text(encoding="utf-8"))
    files = data.get("state_files")
    if not isinstance(files, dict) or not files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise EditkitError(f"{file}: not a checkpoint editkit wrote (no checksums of its state); cannot resume from it")
    return files


def _checksums(state: Path) -> dict[str, str]:
    return {p.relative_to(state).as_posix(): sha256_file(p) for p in sorted(state.rglob("*")) if p.is_file()}


def _check_state(file: Path, state: Path, recorded: Mapping[str, str]) -> None:
    if not state.is_dir():
        raise EditkitError(f"{file}: its state {state} is missing; cannot resume from it")
    actual = _checksums(state)
    for name in sorted(set(recorded) | set(actual)):
        if recorded.get(name) != actual.get(name):
            what = "is missing" if name not in actual else "is not part of it" if name not in recorded else "does not match its checksum"
            raise EditkitError(f"{file}: the checkpoint is damaged: {state / name} {what}; cannot resume from it")


def _check_rows(file: Path, mark: Mapping[str, Any] | None, step: int, complete: bool) -> None:
    """``file`` holds exactly the rows ``mark`` recorded, then only rows of later steps (the last possibly
    torn by a kill; none at all after a finished run)."""
    size = file.stat().st_size if file.is_file() else None
    if mark is not None and mark["rows"] > 0 and size is None:
        raise EditkitError(f"{file}: is missing, but held {mark['rows']} rows at the checkpoint of step {step}; cannot resume")
    if size is None:
        return
    kept = mark["bytes"] if mark is not None else 0
    if size < kept:
        raise EditkitError(f"{file}: has lost rows: {size} bytes, but {kept} ({mark['rows']} rows) at the checkpoint of step {step}; cannot resume")
    digest, rows, _ = digest_prefix(file, kept)
    with open(file, "rb") as handle:
        handle.seek(kept)
        tail = handle.read()  # the rows of one checkpoint interval at most
    if mark is not None and (digest.hexdigest() != mark["sha256"] or rows != mark["rows"]):
        raise EditkitError(f"{file}: rows up to step {step} are not those its checkpoint recorded (missing or changed); cannot resume")
    lines = tail.split(b"\n")
    for number, line in enumerate(lines[:-1], start=mark["rows"] + 1 if mark is not None else 1):  # lines[-1]: torn or empty
        try:
            row = json.loads(line)
            later = isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step
        except (ValueError, RecursionError):
            later = False
        if complete or not later:
            raise EditkitError(f"{file}: line {number}, after the checkpoint of step {step}, is not a row of a later step; cannot resume")


def rewind(directory: Path, checkpoint: Checkpoint) -> list[dict[str, Any]]:
    """Drop every row written after ``checkpoint`` (verified by :func:`read_checkpoint`) from the run's row
    files; return the kept results rows, from which the summary of the resumed run is rebuilt."""
    for name in JSONL_FILES:
        file, mark = directory / name, checkpoint.files.get(name)
        if mark is None:
            file.unlink(missing_ok=True)
        elif file.stat().st_size != mark["bytes"]:
            os.truncate(file, mark["bytes"])
    return results_at(directory, checkpoint)


def results_at(directory: Path, checkpoint: Checkpoint) -> list[dict[str, Any]]:
    """The results rows up to ``checkpoint``, read only (a finished run's summary is rebuilt from them)."""
    mark = checkpoint.files.get(RESULTS)
    if mark is None:
        return []
    with open(directory / RESULTS, "rb") as handle:
        return [json.loads(line) for line in handle.read(mark["bytes"]).splitlines()]


def save_checkpoint(directory: Path, step: int, editor: Any, files: Mapping[str, Mapping[str, Any]], complete: bool = False) -> None:
    """Save the editor's state after ``step`` and point ``checkpoint.json`` at it, with the checksums of the
    state's files and ``files`` (what :meth:`RunWriter.sync` says each row file holds); older states go."""
    if complete:
        state = directory / STATE
        _save_state(editor, state)
    else:
        state = directory / CHECKPOINTS / f"step-{step}"
        tmp = state.with_name(state.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _save_state(editor, tmp)
        shutil.rmtree(state, ignore_errors=True)
        os.replace(tmp, state)
    record = {
        "step": step,
        "state": state.relative_to(directory).as_posix(),
        "complete": complete,
        "state_files": _checksums(state),
        "files": dict(files),
    }
    write_json_atomic(directory / CHECKPOINT, record)
    for old in (directory / CHECKPOINTS).glob("step-*"):
        if old != state:
            shutil.rmtree(old, ignore_errors=True)
    if complete:
        shutil.rmtree(directory / CHECKPOINTS, ignore_errors=True)


def _save_state(editor: Any, directory: Path) -> None:
    """``editor.save_state``, with a storage failure as the OSError it is: safetensors reports a full disk
    as its own error type, with the errno only in the text."""
    try:
        editor.save_state(directory)
    except OSError:
        raise
    except Exception as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(directory)) from exc


# ----------------------------------------------------------------------------------- resuming a run

#: what a resumed run must share with the run it continues, and how a refusal names a difference
_SAME = (
    (("dataset", "sha256"), "the dataset file changed since the run started"),
    (("stream_hash",), "the stream changed since the run started (the dataset's records, or their order)"),
    (("num_edits",), "the number of edits changed"),
    (("model", "weights_sha256"), "the model's weights changed since the run started"),
    (("initial_state", "sha256"), "the state the run started from (--load-state) changed"),
    (("method_config",), "the method's config changed since the run started (an --hparams file?)"),
    (("schedule",), "the schedule changed"),
    (("scorers",), "the scorers changed"),
    (("seed",), "the seed changed"),
)


def _get(record: Mapping[str, Any], keys: Sequence[str]) -> Any:
    value: Any = record
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def check_same_run(config_file: Path, expected: Mapping[str, Any]) -> None:
    """Refuse to continue the run recorded in ``config_file`` with other inputs than it started with."""
    try:
        recorded = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(recorded, dict):
            raise ValueError
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise EditkitError(f"{config_file}: not a run record editkit wrote; cannot resume") from None
    for keys, what in _SAME:
        before, now = _get(recorded, keys), _get(expected, keys)
        if before != now:
            shown = "" if isinstance(before, (dict, list)) else f": {before} then, {now} now"
            raise EditkitError(f"--resume {config_file.parent}: {what}{shown}; cannot continue it with other inputs, start a new run")


def open_run_to_resume(directory: Path, harness: Any, runs: Sequence[tuple[Any, Any]], nested: bool) -> RunLock:
    """Lock a run directory to continue it and check, before anything is written, that every method's run in
    it continues with the same inputs (dataset bytes, stream, weights, config) and has intact checkpoints
    and rows. ``nested``: each method has its own sub-directory (``compare``)."""
    lock = open_for_resume(directory)
    try:
        for spec, config in runs:
            method_dir = lock.directory / spec.name if nested else lock.directory
            if (method_dir / CONFIG).is_file():
                check_same_run(method_dir / CONFIG, harness.run_config(spec, config))
                read_checkpoint(method_dir, len(harness.stream))
    except BaseException:
        lock.release()
        raise
    return lock
