"""The results directory of one method's run (docs/design.md, "Results"); the rows are those of
:mod:`editkit.evaluation.schema`.

Rows are appended and flushed the moment they exist, so an interrupted run keeps every number it had
produced; ``summary.json`` is written atomically at the end (and after each checkpoint), so a reader never
sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Sequence

import editkit
from editkit.errors import EditkitError

try:
    import fcntl
except ImportError:  # Windows: runs are not locked there
    fcntl = None  # type: ignore[assignment]

from .schema import EditRow, ResultRow, RoutingRow, SummaryRow, TimingRow, to_json
from .scorers import Score
from .uncertainty import bootstrap_mean

CONFIG, RESULTS, EDITS, SUMMARY, STATE = "config.json", "results.jsonl", "edits.jsonl", "summary.json", "state"
#: written only for editors that report routing scores (see evaluation/routing.py)
ROUTING = "routing.jsonl"
#: seconds of each scoring pass (per checkpoint and scorer), so editing and scoring time can be told apart
TIMINGS = "timings.jsonl"
#: what a run needs to be resumed: the command and its options (top level), the last checkpoint (per method)
INVOCATION, CHECKPOINT = "invocation.json", "checkpoint.json"
RUN_FILES = (CONFIG, RESULTS, EDITS, SUMMARY, ROUTING, TIMINGS, INVOCATION, CHECKPOINT)
#: held (flock) by the live run writing a directory; holds its PID for the message a second run gets
LOCK = ".editkit.lock"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def prepare_output_dir(path: Path, overwrite: bool) -> "RunLock":
    """Lock ``path`` for this run, then refuse to mix a new run into an old one; with ``overwrite`` clear
    only editkit's own files, and only those of this editkit version. The caller releases the lock."""
    if path.exists() and not path.is_dir():
        raise EditkitError(f"--out {path}: exists and is not a directory")
    missing = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    path.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(path).acquire()
    except EditkitError:
        with contextlib.suppress(OSError):
            for p in missing:  # what this call created (refused from above: a live run's sub-directory)
                p.rmdir()
        raise
    try:
        existing = [p for p in path.rglob("*") if p.is_file() and p.name in RUN_FILES]
        if existing and not overwrite:
            raise EditkitError(f"--out {path}: already holds results ({existing[0]}); choose another --out, pass --overwrite, or continue it with --resume {path}")
        check_results_version(path)
        for p in existing:
            p.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def open_for_resume(path: Path) -> "RunLock":
    """Lock a run directory to continue it: it must hold the invocation of an editkit run of this version."""
    if not (path / INVOCATION).is_file():
        raise EditkitError(f"--resume {path}: no {INVOCATION} here, so not a run editkit can resume")
    lock = RunLock(path).acquire()
    try:
        check_results_version(path)
    except BaseException:
        lock.release()
        raise
    return lock


def check_results_version(path: Path) -> None:
    """Refuse a directory whose runs another editkit version wrote: rows of two versions in one directory
    could not be told apart, and nothing guarantees they were scored the same way."""
    current = editkit.__version__
    for config in sorted(path.rglob(CONFIG)):
        try:
            written = json.loads(config.read_text(encoding="utf-8"))["versions"]["editkit"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise EditkitError(f"--out {path}: cannot tell which editkit version wrote {config}; choose another --out") from None
        if written != current:
            raise EditkitError(
                f"--out {path}: holds results of editkit {written} ({config}), this is editkit {current}; choose another --out"
            )


class RunLock:
    """An exclusive ``flock`` on ``<directory>/.editkit.lock`` for as long as a run writes the directory.

    The kernel drops the lock when its process dies, even by SIGKILL, so a lock file left behind by a dead
    run is simply taken over, and a PID that the system has since reused cannot keep a directory locked.
    The file holds the PID only to tell a refused user which process is using the directory. Runs nested
    inside each other (a ``run`` into a sub-directory of a live ``compare``, or the reverse) are refused too.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            holder = _try_lock(fd)
            if holder is not None:
                os.close(fd)
                raise self._busy(self.directory, holder)
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            self._refuse_nested_runs()
        except EditkitError:
            self.release()
            raise
        return self

    def _refuse_nested_runs(self) -> None:
        others = [d / LOCK for d in self.directory.resolve().parents] + list(self.directory.rglob(f"*/{LOCK}"))
        for other in others:
            try:
                fd = os.open(other, os.O_RDONLY)
            except OSError:
                continue
            try:
                holder = _try_lock(fd)
            finally:
                os.close(fd)
            if holder is not None:
                raise self._busy(other.parent, holder)

    def _busy(self, directory: Path, holder: str) -> EditkitError:
        inside = "" if directory == self.directory else f" (its directory {directory})"
        return EditkitError(
            f"--out {self.directory}: in use by a running editkit{inside}, pid {holder}; wait for it to end or choose another --out"
        )

    def release(self) -> None:
        """Remove the file while still holding the lock, so no one can lock the old file after us."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _try_lock(fd: int) -> str | None:
    """Lock ``fd``'s file (None), or, when another process holds it, the PID that process wrote there."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    return None


class RunWriter:
    """Writes one method's run directory; ``context`` (model, dataset, stream, schedule) goes on every row."""

    def __init__(self, directory: Path, config: dict[str, Any], context: dict[str, str], keep_config: bool = False):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        if not (keep_config and (directory / CONFIG).is_file()):  # a resumed run keeps its original record
            write_json_atomic(directory / CONFIG, config)
        self.context = context
        self._results = open(directory / RESULTS, "a", encoding="utf-8")
        self._edits = open(directory / EDITS, "a", encoding="utf-8")
        self._routing = None  # opened on the first routing row: most editors never write one
        self._timings = open(directory / TIMINGS, "a", encoding="utf-8")

    @property
    def state_dir(self) -> Path:
        return self.directory / STATE

    def _append(self, handle, row: Any) -> None:
        handle.write(json.dumps(to_json(row), ensure_ascii=False) + "\n")
        handle.flush()

    def edit(self, step: int, edit_id: str, stats: dict[str, Any]) -> None:
        values = {k: _jsonable(v) for k, v in stats.items()}
        row = EditRow(self.context["method"], step, edit_id, values.get("iterations"), values.get("seconds"), values)
        self._append(self._edits, row)

    def routing(self, rows: Iterable[dict[str, Any]]) -> None:
        """Routing-score rows (step, edit_id, kind, score, threshold, score_name), with the run's context."""
        if self._routing is None:
            self._routing = open(self.directory / ROUTING, "a", encoding="utf-8")
        for row in rows:
            line = RoutingRow(method=self.context["method"], **row, **self._context_fields())
            self._routing.write(json.dumps(to_json(line), ensure_ascii=False) + "\n")
        self._routing.flush()

    def timing(self, step: int, what: str, seconds: float, items: int) -> None:
        """How long one scoring pass took (``what``: ``score:tf``, ``routing``...), how many rows it wrote, and
        the process's peak resident memory so far (what a long stream must keep flat)."""
        self._append(self._timings, TimingRow(self.context["method"], step, what, seconds, items, peak_rss_mb()))

    def _context_fields(self) -> dict[str, str]:
        return {k: v for k, v in self.context.items() if k != "method"}

    def scores(self, scores: Iterable[Score]) -> None:
        for s in scores:
            row = ResultRow(method=self.context["method"], **asdict(s), **self._context_fields())
            self._results.write(json.dumps(to_json(row), ensure_ascii=False) + "\n")
        self._results.flush()
        os.fsync(self._results.fileno())

    def sync(self) -> None:
        """Everything written so far is on disk (before a checkpoint says so)."""
        for handle in (self._results, self._edits, self._routing, self._timings):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())

    def summary(self, rows: Sequence[SummaryRow]) -> None:
        write_json_atomic(self.directory / SUMMARY, [to_json(r) for r in rows])

    def close(self) -> None:
        self._results.close()
        self._edits.close()
        self._timings.close()
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
    rows = []
    for (metric, scorer, step), values in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        interval = bootstrap_mean(values)
        rows.append(
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
                ci_low=interval.low,
                ci_high=interval.high,
                ci_seed=interval.seed,
                ci_resamples=interval.resamples,
                chat_template=bool(context.get("chat_template", False)),
                tuned_on=context.get("tuned_on"),
            )
        )
    return rows


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


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS); None where
    the platform has no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
