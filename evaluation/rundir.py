"""What editkit owns in a run directory, so ``--overwrite`` removes only that and ``--resume`` continues only
a directory editkit made.

A run directory carries a marker file, ``.editkit-run``, that editkit writes when it creates the run and
that lists every path the run claimed before writing it (a name ending in ``/`` is a whole sub-directory
the run wrote, such as a saved editor state). ``--overwrite`` walks the directory without following
symlinks and refuses, naming it, anything the marker does not list: another tool's file, a nested run, a
symlink to an old run. Only when nothing foreign is found are the claimed paths removed. The marker also
tells ``--resume`` that the directory is a run editkit wrote.

A run directory holds no symlinks: every file of a run is opened inside it, so a symlinked method
sub-directory (pointing at an old run, whose rows new rows would join) is refused instead of followed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Iterator

import click

from editkit.errors import EditkitError

MARKER = ".editkit-run"
_FORMAT = "editkit-run/1"
#: the run lock (see store.RunLock) comes and goes with a live run; it is editkit's whatever the marker says
_ALWAYS_OWNED = (MARKER, ".editkit.lock")
#: errors of the storage under a run directory, which the user fixes (space, permissions, a file in the way)
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EIO, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP}
)


class RunDirectory(click.Path):
    """``--out`` / ``--resume``: a path that is not empty (``--out "$UNSET"`` would otherwise silently mean
    the working directory)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a directory (use '.' for the working directory)", param, ctx)
        return super().convert(value, param, ctx)


def normalized(path: Path) -> Path:
    """``path`` made absolute with ``..`` taken out, so ``a/missing/../run`` creates ``a/run`` and no stray
    ``a/missing``; symlinks above the run directory are followed (the run directory itself holds none)."""
    return Path(path).expanduser().resolve()


# ------------------------------------------------------------------------------------------ the marker


def is_marked(root: Path) -> bool:
    marker = root / MARKER
    return marker.is_file() and not marker.is_symlink()


def owned_paths(root: Path) -> set[str]:
    """The paths (relative, POSIX) the marker of ``root`` lists; refuses a marker editkit did not write."""
    marker = root / MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        if data.get("format") != _FORMAT or not all(isinstance(p, str) and _inside(p) for p in data["owned"]):
            raise ValueError  # a path out of the run directory (../x, /x) would let --overwrite remove it
        return set(data["owned"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise EditkitError(f"{marker}: not a run marker editkit wrote; remove the directory yourself or choose another --out") from None


def _inside(rel: str) -> bool:
    parts = rel.removesuffix("/").split("/")
    return not rel.startswith("/") and all(part not in ("", ".", "..") for part in parts) and rel not in _ALWAYS_OWNED


def _write_marker(root: Path, owned: set[str]) -> None:
    tmp = root / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"format": _FORMAT, "owned": sorted(owned)}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, root / MARKER)


def mark(root: Path) -> None:
    """Make ``root`` a run directory that owns nothing yet (kept as it is when already one)."""
    if not is_marked(root):
        _write_marker(root, set())


def run_root(directory: Path) -> Path | None:
    """The marked run directory ``directory`` is (a ``run``) or lies in (a method of a ``compare``)."""
    directory = Path(directory)
    for candidate in (directory, *directory.parents):
        if is_marked(candidate):
            return candidate
    return None


def claim(directory: Path, *names: str) -> None:
    """Record that the run writes ``directory/name`` (``name/`` for a whole sub-directory) before it does.

    A path that already exists and was not the run's stays foreign: a later ``--overwrite`` refuses it
    rather than removing it. Outside a marked run directory (the Python API writing anywhere) nothing is
    recorded."""
    root = run_root(directory)
    if root is None:
        return
    base = Path(directory).relative_to(root)
    owned = owned_paths(root)
    new = set(owned)
    for name in names:
        rel = (base / name.rstrip("/")).as_posix() + ("/" if name.endswith("/") else "")
        if rel in owned or _owns(owned, rel):
            continue
        if (root / rel.rstrip("/")).exists() or (root / rel.rstrip("/")).is_symlink():
            continue  # someone else's: never taken over
        new.add(rel)
    if new != owned:
        _write_marker(root, new)


def _owns(owned: set[str], rel: str) -> bool:
    """Whether a claimed path covers ``rel``: the path itself, its temp file, or a claimed sub-directory above it."""
    if rel.removesuffix(".tmp") in _ALWAYS_OWNED or rel in owned or rel.removesuffix(".tmp") in owned:
        return True
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if prefix + "/" in owned or prefix.removesuffix(".tmp") + "/" in owned:
            return True
    return False


# ------------------------------------------------------------------------------- walking a run directory


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``root`` (relative POSIX path, lstat), never following a symlink."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                path = f"{rel}/{entry.name}" if rel else entry.name
                info = entry.stat(follow_symlinks=False)
                yield path, info
                if stat.S_ISDIR(info.st_mode):
                    stack.append(path)


def refuse_symlinks(root: Path, option: str) -> None:
    """A run directory holds no symlinks (a method sub-directory linked to an old run would mix two runs)."""
    for rel, info in _walk(root):
        if stat.S_ISLNK(info.st_mode):
            raise EditkitError(f"{option} {root}: {root / rel} is a symlink; a run directory holds only its own files")


def check_inside(directory: Path) -> None:
    """Refuse to write a method's files through a symlink (its directory, or one above it in the run)."""
    root = run_root(directory)
    stop = root if root is not None else Path(directory)
    for p in (Path(directory), *Path(directory).parents):
        if p.is_symlink():
            raise EditkitError(f"{p}: is a symlink; a run directory holds only its own files")
        if p == stop:
            break


def foreign_entries(root: Path) -> list[str]:
    """What ``--overwrite`` may not remove: every file or symlink below ``root`` the marker does not list
    (directories themselves hold nothing to lose; what is in them is judged entry by entry)."""
    owned = owned_paths(root)
    return [rel for rel, info in _walk(root) if not stat.S_ISDIR(info.st_mode) and not _owns(owned, rel)]


def clear(root: Path) -> None:
    """Remove what the previous run in ``root`` wrote (call :func:`foreign_entries` first), keep the marker."""
    owned = owned_paths(root)
    for rel in sorted(owned, key=lambda p: -p.count("/")):
        path = root / rel.rstrip("/")
        for target in (path, path.with_name(path.name + ".tmp")):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    parents = {str(parent) for p in owned for parent in Path(p.rstrip("/")).parents} - {"."}
    for rel in sorted(parents, key=lambda p: -p.count("/")):
        with contextlib.suppress(OSError):  # a method directory, now empty (an empty one is never foreign)
            (root / rel).rmdir()
    _write_marker(root, set())


def storage_error(option: str, root: Path, exc: OSError) -> EditkitError:
    """The one line for an OSError under a run directory (read-only, full disk, a file in the way)."""
    where = f" ({exc.filename})" if exc.filename else ""
    hint = "; results written so far are kept" + (f" (continue with --resume {root})" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
    return EditkitError(f"{option} {root}: cannot write{where}: {exc.strerror or exc}{hint}")


@contextlib.contextmanager
def storage_errors(option: str, root: Path) -> Iterator[None]:
    """Turn an OSError of the storage into :func:`storage_error`'s one line (exit 2, no traceback)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        raise storage_error(option, root, exc) from None


# ------------------------------------------------------------------------------- the stored invocation

INVOCATION = "invocation.json"


def _option_name(param: click.Parameter) -> str:
    """How the user types ``param``: ``--report``, ``--progress/--no-progress``, ``METHOD``."""
    if isinstance(param, click.Option):
        return "/".join([*param.opts, *param.secondary_opts])
    return param.human_readable_name


def resumed_params(ctx: click.Context, command: str) -> dict[str, Any] | None:
    """The options of the run ``--resume DIR`` continues, as the command's own parameters would have them
    (None without ``--resume``).

    Resuming with other options than the run started with would mix two runs in one directory, so any
    option given next to ``--resume`` is refused. Every stored value goes through its option's own click
    type, so an ``invocation.json`` with a missing key or a wrong type is one line, not a traceback."""
    directory = ctx.params.get("resume")
    if directory is None:
        return None
    from click.core import ParameterSource

    others = [p for p in ctx.command.params if p.name != "resume"]
    given = [_option_name(p) for p in others if ctx.get_parameter_source(p.name) is not ParameterSource.DEFAULT]
    if given:
        raise EditkitError(f"--resume {directory}: takes no other options (the run's own are reused), got {', '.join(given)}")
    directory = normalized(directory)
    file = directory / INVOCATION
    try:
        stored = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EditkitError(f"--resume {directory}: no {INVOCATION} here, so not a run editkit can resume") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise EditkitError(f"--resume {directory}: {file} is not an invocation editkit wrote") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("command"), str) or not isinstance(stored.get("params"), dict):
        raise EditkitError(f"--resume {directory}: {file} is not an invocation editkit wrote (no command and params)")
    if stored["command"] != command:
        raise EditkitError(f"--resume {directory}: that run was started by 'editkit {stored['command']}', not 'editkit {command}'")
    params: dict[str, Any] = {}
    for param in others:
        if param.name not in stored["params"]:
            raise EditkitError(f"--resume {directory}: {file} holds no value for {_option_name(param)}; not an invocation editkit wrote")
        try:
            params[param.name] = param.type_cast_value(ctx, stored["params"][param.name])
        except (click.BadParameter, TypeError, ValueError) as exc:
            message = exc.format_message() if isinstance(exc, click.BadParameter) else str(exc)
            raise EditkitError(f"--resume {directory}: {file}: {_option_name(param)}: {message}") from None
    params["resume"] = directory
    cwd = stored.get("cwd")
    if isinstance(cwd, str) and Path(cwd).is_dir():
        os.chdir(cwd)  # where the run's relative paths point
    return params
