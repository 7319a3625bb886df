"""User-facing errors.

Anything a user can fix (a bad path, a malformed record, an unknown method, a layer that does not exist)
is raised as :class:`EditkitError`. The CLI turns it into a one-line message and exit code 2, so a user
never has to read a traceback to learn which file, record or field is wrong.
"""

from __future__ import annotations


class EditkitError(Exception):
    """A problem with the user's input; the message alone must say what to fix."""


class DataError(EditkitError):
    """A dataset file or record that cannot be read into :class:`~editkit.requests.EditRequest`."""

    def __init__(self, path: object, message: str, record: int | None = None, field: str | None = None):
        where = str(path)
        if record is not None:
            where += f", record {record}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path, self.record, self.field = path, record, field


class ConfigError(EditkitError):
    """A method configuration, override or layer path that does not fit the model."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The CLI prints errors on one line; library messages (transformers, safetensors...) often span many."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
