"""Reading a user's input file with bounds: a regular file only, and no more than a size cap.

``--data /dev/zero`` would otherwise be read until the OOM killer acts, and a FIFO nobody writes to would
hang the run before it starts; both are refused in one line, before anything is opened for reading.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import EditkitError

GiB = 1 << 30


def check_regular(path: Path, what: str, max_bytes: int) -> int:
    """The size of ``path``; refuses what is not a regular file (a FIFO, a device, a socket) or is larger
    than ``max_bytes``. ``what`` starts the message (``--hparams x.yaml``, a dataset path)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise EditkitError(f"{what}: no such file") from None
    except OSError as exc:
        raise EditkitError(f"{what}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a directory" if stat.S_ISDIR(info.st_mode) else "not a file"
        raise EditkitError(f"{what}: is {kind}, not a regular file")
    if info.st_size > max_bytes:
        raise EditkitError(f"{what}: {info.st_size} bytes, more than the {max_bytes} bytes editkit reads from such a file")
    return info.st_size


def read_text(path: Path, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` (read no further than that, should it grow)."""
    check_regular(path, what, max_bytes)
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise EditkitError(f"{what}: more than the {max_bytes} bytes editkit reads from such a file")
    return data.decode("utf-8")
