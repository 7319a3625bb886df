"""The results directory of one method's run (docs/design.md, "Results"); the rows are those of
:mod:`editkit.evaluation.schema`.

Rows are appended and flushed the moment they exist, so an interrupted run keeps every number it had
produced; ``summary.json`` is written atomically at the end (and after each checkpoint), so a reader never
sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
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

from . import rundir
from .schema import EditRow, ResultRow, RoutingRow, SummaryRow, TimingRow, to_json
from .scorers import Score
from .uncertainty import bootstrap_mean

CONFIG, RESULTS, EDITS, SUMMARY, STATE = "config.json", "results.jsonl", "edits.jsonl", "summary.json", "state"
#: written only for editors that report routing scores (see evaluation/routing.py)
ROUTING = "routing.jsonl"
#: seconds of each scoring pass (per checkpoint and scorer), so editing and scoring time can be told apart
TIMINGS = "timings.jsonl"
#: what a run needs to be resumed: the command and its options (top level), the last checkpoint (per method)
INVOCATION, CHECKPOINT = rundir.INVOCATION, "checkpoint.json"
RUN_FILES = (CONFIG, RESULTS, EDITS, SUMMARY, ROUTING, TIMINGS, INVOCATION, CHECKPOINT)
#: the editor states of a method's unfinished run (see checkpoints.py)
CHECKPOINTS = "checkpoints"
#: the append-only row files of a method's run; a checkpoint records how far each had got
JSONL_FILES = (RESULTS, EDITS, ROUTING, TIMINGS)
#: everything a method's run writes into its directory (claimed in the run directory's marker first)
METHOD_FILES = (CONFIG, RESULTS, EDITS, SUMMARY, ROUTING, TIMINGS, CHECKPOINT, f"{CHECKPOINTS}/", f"{STATE}/")
#: held (flock) by the live run writing a directory; holds its PID for the message a second run gets
LOCK = ".editkit.lock"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def prepare_output_dir(path: Path, overwrite: bool, invocation: dict[str, Any] | None = None) -> "RunLock":
    """Lock ``path`` (made absolute, see :func:`rundir.normalized`) for a new run and mark it as a run
    directory; refuse to mix the new run into results already there. ``overwrite`` removes only what an
    earlier run of this editkit version recorded in the directory's marker, and refuses anything else by
    name. ``invocation`` (what ``--resume`` repeats) is written into it. The caller writes into
    ``lock.directory`` and releases the lock."""
    path = rundir.normalized(path)
    with rundir.storage_errors("--out", path):
        if path.exists() and not path.is_dir():
            raise EditkitError(f"--out {path}: exists and is not a directory")
        missing = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
        path.mkdir(parents=True, exist_ok=True)
        try:
            lock = RunLock(path).acquire()
        except BaseException:
            with contextlib.suppress(OSError):
                for p in missing:  # what this call created (refused from above: a live run's sub-directory)
                    p.rmdir()
            raise
        try:
            _claim_for_new_run(path, overwrite)
            if invocation is not None:
                write_json_atomic(path / INVOCATION, invocation)
        except BaseException:
            lock.release()
            raise
    return lock


def _claim_for_new_run(path: Path, overwrite: bool) -> None:
    rundir.refuse_symlinks(path, "--out")
    marked = rundir.is_marked(path)
    existing = [p for p in path.rglob("*") if p.name in (*RUN_FILES, rundir.MARKER) and p != path / rundir.MARKER]
    if (marked or existing) and not overwrite:
        shown = existing[0] if existing else path / rundir.MARKER
        raise EditkitError(f"--out {path}: already holds results ({shown}); choose another --out, pass --overwrite, or continue it with --resume {path}")
    if overwrite and existing and not marked:
        raise EditkitError(f"--out {path}: holds results editkit did not mark as its own run ({existing[0]}); --overwrite removes only a run directory editkit made: remove them yourself or choose another --out")
    if marked:
        foreign = rundir.foreign_entries(path)
        if foreign:
            raise EditkitError(f"--out {path}: --overwrite removes only what editkit's run wrote here, and {path / foreign[0]} is not one of its files; move it away or choose another --out")
        check_results_version(path)
        rundir.clear(path)
    rundir.mark(path)
    rundir.claim(path, INVOCATION, SUMMARY)


def open_for_resume(path: Path) -> "RunLock":
    """Lock a run directory to continue it: one editkit marked, with the invocation of a run of this
    version and no symlinks. The caller checks the run against its inputs (:func:`resume.check_resumable`)."""
    path = rundir.normalized(path)
    with rundir.storage_errors("--resume", path):
        if not (path / INVOCATION).is_file():
            raise EditkitError(f"--resume {path}: no {INVOCATION} here, so not a run editkit can resume")
        if not rundir.is_marked(path):
            raise EditkitError(f"--resume {path}: no {rundir.MARKER} here, so not a run directory editkit made")
        lock = RunLock(path, option="--resume").acquire()
        try:
            rundir.refuse_symlinks(path, "--resume")
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
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
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

    def __init__(self, directory: Path, option: str = "--out"):
        self.directory = directory
        self.path = directory / LOCK
        self.option = option  # how the user named the directory, for the refusal
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
            f"{self.option} {self.directory}: in use by a running editkit{inside}, pid {holder}; wait for it to end"
            + (" or choose another --out" if self.option == "--out" else "")
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
        """Release; the lock spans every write of the run, so a storage error on the run directory (a full
        disk, a read-only mount) leaves it here as one line instead of a traceback."""
        self.release()
        if isinstance(exc, OSError) and exc.errno in rundir.STORAGE_ERRNOS:
            raise rundir.storage_error(self.option, self.directory, exc) from None


def _try_lock(fd: int) -> str | None:
    """Lock ``fd``'s file (None), or, when another process holds it, the PID that process wrote there."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    return None


def digest_prefix(path: Path, size: int) -> tuple[Any, int, int]:
    """(sha256 object, newline count, bytes read) of the first ``size`` bytes of ``path``, read in blocks."""
    digest, rows, done = hashlib.sha256(), 0, 0
    with open(path, "rb") as handle:
        while done < size:
            block = handle.read(min(1 << 20, size - done))
            if not block:
                break
            digest.update(block)
            rows += block.count(b"\n")
            done += len(block)
    return digest, rows, done


class _RowFile:
    """One append-only JSONL file of a run and what it holds so far (rows, bytes, sha256): a checkpoint
    records these, so a resume can tell a complete prefix from one with rows lost or altered."""

    def __init__(self, path: Path):
        self.path = path
        self.digest = hashlib.sha256()
        self.rows = self.bytes = 0
        if path.is_file():  # a resumed run: the rows kept up to its checkpoint
            self.digest, self.rows, self.bytes = digest_prefix(path, path.stat().st_size)
        self.handle = open(path, "ab")

    def write(self, rows: Iterable[dict[str, Any]], sync: bool = False) -> None:
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        self.handle.write(data)
        self.handle.flush()
        if sync:
            os.fsync(self.handle.fileno())
        self.digest.update(data)
        self.rows += data.count(b"\n")
        self.bytes += len(data)

    def mark(self) -> dict[str, Any]:
        return {"rows": self.rows, "bytes": self.bytes, "sha256": self.digest.hexdigest()}


class RunWriter:
    """Writes one method's run directory; ``context`` (model, dataset, stream, schedule) goes on every row."""

    def __init__(self, directory: Path, config: dict[str, Any], context: dict[str, str], keep_config: bool = False):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        rundir.check_inside(directory)
        rundir.claim(directory, *METHOD_FILES)
        if not (keep_config and (directory / CONFIG).is_file()):  # a resumed run keeps its original record
            write_json_atomic(directory / CONFIG, config)
        self.context = context
        self._results = _RowFile(directory / RESULTS)
        self._edits = _RowFile(directory / EDITS)
        self._routing: _RowFile | None = None  # opened on the first routing row: most editors never write one
        self._timings = _RowFile(directory / TIMINGS)

    @property
    def state_dir(self) -> Path:
        return self.directory / STATE

    def _files(self) -> list[_RowFile]:
        return [f for f in (self._results, self._edits, self._routing, self._timings) if f is not None]

    def edit(self, step: int, edit_id: str, stats: dict[str, Any]) -> None:
        values = {k: _jsonable(v) for k, v in stats.items()}
        row = EditRow(self.context["method"], step, edit_id, values.get("iterations"), values.get("seconds"), values)
        self._edits.write([to_json(row)])

    def routing(self, rows: Iterable[dict[str, Any]]) -> None:
        """Routing-score rows (step, edit_id, kind, score, threshold, score_name), with the run's context."""
        if self._routing is None:
            self._routing = _RowFile(self.directory / ROUTING)
        self._routing.write(to_json(RoutingRow(method=self.context["method"], **row, **self._context_fields())) for row in rows)

    def timing(self, step: int, what: str, seconds: float, items: int) -> None:
        """How long one scoring pass took (``what``: ``score:tf``, ``routing``...), how many rows it wrote, and
        the process's peak resident memory and peak CUDA memory so far (what a long stream must keep flat)."""
        row = TimingRow(self.context["method"], step, what, seconds, items, peak_rss_mb(), peak_device_mb())
        self._timings.write([to_json(row)])

    def _context_fields(self) -> dict[str, str]:
        return {k: v for k, v in self.context.items() if k != "method"}

    def scores(self, scores: Iterable[Score]) -> None:
        rows = (ResultRow(method=self.context["method"], **asdict(s), **self._context_fields()) for s in scores)
        self._results.write((to_json(row) for row in rows), sync=True)

    def sync(self) -> dict[str, dict[str, Any]]:
        """Everything written so far is on disk (before a checkpoint says so); returns, per row file, the
        rows, bytes and sha256 it holds, for the checkpoint to record."""
        for f in self._files():
            f.handle.flush()
            os.fsync(f.handle.fileno())
        return {f.path.name: f.mark() for f in self._files()}

    def summary(self, rows: Sequence[SummaryRow]) -> None:
        write_json_atomic(self.directory / SUMMARY, [to_json(r) for r in rows])

    def close(self) -> None:
        for f in self._files():
            f.handle.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def summarize(
    scores: Sequence[Score], context: dict[str, str], final_step: int, per_checkpoint: bool, full_loops: Sequence[int] = ()
) -> list[SummaryRow]:
    """Means over requests. ``per_checkpoint`` keeps one row per step (final, every:K); else all
    scores are pooled into one row at ``final_step`` (immediate: each edit was scored at its own step).
    ``full_loops`` holds the (1-based) steps of the edits that ran the full forward (:func:`full_loop_steps`)."""
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
                full_loop_edits=sum(1 for s in full_loops if s <= step),
            )
        )
    return rows


def full_loop_steps(directory: Path, full: str) -> list[int]:
    """The steps of the edits in ``directory``'s ``edits.jsonl`` that recorded ``loop: full`` (a row
    file is flushed at every write, so this is current while the run goes on)."""
    file = directory / EDITS
    if not file.is_file():
        return []
    with open(file, "rb") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [row["step"] for row in rows if row.get("loop") == full]


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


def peak_device_mb() -> float | None:
    """Peak memory torch allocated on the CUDA devices of this process, in MiB (summed over the devices a
    ``--device-map`` spreads the model on); None where no CUDA device is in use."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    total = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
    return round(total / 2**20, 1)


def peak_memory_line() -> str:
    """``peak memory: host N MiB, device M MiB`` (what a run printed at its end)."""
    host, device = peak_rss_mb(), peak_device_mb()
    parts = [f"host {host:.0f} MiB" if host is not None else "host n/a"]
    parts.append(f"device {device:.0f} MiB" if device is not None else "device n/a (cpu)")
    return "peak memory: " + ", ".join(parts)
