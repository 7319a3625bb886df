"""Dataset loading: every supported format becomes a list of :class:`~editkit.requests.EditRequest`."""

from .formats import FORMATS, Format, Record, detect_format
from .loading import BUNDLED, COLUMN_FIELDS, DATA_NAMES, load_requests, parse_columns, resolve_source

__all__ = [
    "BUNDLED",
    "COLUMN_FIELDS",
    "DATA_NAMES",
    "FORMATS",
    "Format",
    "Record",
    "detect_format",
    "load_requests",
    "parse_columns",
    "resolve_source",
]
