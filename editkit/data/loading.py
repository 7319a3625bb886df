"""Read a dataset (bundled name, JSON/JSONL file, or anything ``datasets`` loads) into edit requests.

Everything is validated up front: a malformed file or record raises :class:`~editkit.errors.DataError`
naming the file, the record index and the field, before a model is loaded or a result is written.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from editkit.errors import DataError, EditkitError
from editkit.files import GiB, check_regular, read_text
from editkit.requests import EditRequest

from .formats import FORMATS, Fields, Format, Record, detect_format

#: Bundled streams shipped as package data (see bundled/SOURCE.md for origin, hashes and licences).
BUNDLED: dict[str, str] = {
    "default": "default.jsonl",  # ZsRE records 0-299: the stream `editkit compare` uses with no --data
    "zsre-dev": "zsre-dev.jsonl",  # ZsRE records 1000-1036: the tuning slice, never reported on
}
DATA_NAMES: tuple[str, ...] = tuple(BUNDLED)

#: Request fields a ``--columns`` spec may map; ``prompt`` and ``target`` are required.
COLUMN_FIELDS = ("id", "prompt", "target", "rephrases", "locality_prompt", "locality_answer", "subject", "irrelevant")
#: a dataset file larger than this is refused before it is read (every record is held in memory)
MAX_DATA_BYTES = 4 * GiB
_DATASETS_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def resolve_source(source: str | Path) -> Path:
    """The file behind a bundled name or a path; a path that does not exist is a user error."""
    if str(source) in BUNDLED:
        return Path(str(resources.files("editkit.data").joinpath("bundled", BUNDLED[str(source)])))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(path, f"no such file or directory (bundled datasets: {', '.join(DATA_NAMES)})")
    return path


def parse_columns(spec: str) -> dict[str, str]:
    """``'prompt=question,target=answer'`` → ``{'prompt': 'question', 'target': 'answer'}``."""
    columns: dict[str, str] = {}
    for item in spec.split(","):
        field, sep, column = (part.strip() for part in item.partition("="))
        if not sep or not field or not column:
            raise EditkitError(f"--columns: '{item.strip()}' is not FIELD=COLUMN")
        if field not in COLUMN_FIELDS:
            raise EditkitError(f"--columns: unknown field '{field}'; fields: {', '.join(COLUMN_FIELDS)}")
        columns[field] = column
    missing = [f for f in ("prompt", "target") if f not in columns]
    if missing:
        raise EditkitError(f"--columns: no column given for {', '.join(missing)}")
    return columns


def load_requests(source: str | Path, columns: Mapping[str, str] | None = None) -> list[EditRequest]:
    """All requests of ``source`` in file order, each with its irrelevant text filled in."""
    path = resolve_source(source)
    records = _read_records(path)
    if not records:
        raise DataError(path, "holds no records")
    fmt = _column_format(columns) if columns else detect_format(records[0], path)
    fields = []
    for index, data in enumerate(records):
        if not isinstance(data, dict):
            raise DataError(path, f"expected an object, got {type(data).__name__}", record=index)
        fields.append(fmt.convert(Record(data, path, index)))
    _check_unique_ids(fields, path)
    _fill_irrelevant(fields)
    return [EditRequest(**f) for f in fields]


def _read_records(path: Path) -> list[Any]:
    if path.is_dir():
        return _read_with_datasets(path)
    try:
        check_regular(path, str(path), MAX_DATA_BYTES)  # not /dev/zero, not a FIFO without a writer
    except EditkitError as exc:
        raise DataError(path, str(exc).removeprefix(f"{path}: ")) from None
    if path.suffix.lower() in _DATASETS_SUFFIXES:
        return _read_with_datasets(path)
    try:
        text = read_text(path, str(path), MAX_DATA_BYTES)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror}") from None
    if path.suffix.lower() == ".jsonl":
        return _parse_jsonl(text, path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON array of records, got {type(data).__name__}")
    return data


def _parse_jsonl(text: str, path: Path) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(
                path, f"invalid JSON on line {lineno}, column {exc.colno}: {exc.msg}", record=len(records)
            ) from None
    return records


def _read_with_datasets(path: Path) -> list[Any]:
    """Tabular files and saved datasets go through ``datasets``, the library users already have them in."""
    import datasets

    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(_DATASETS_SUFFIXES[path.suffix.lower()], data_files=str(path))
    except Exception as exc:  # datasets raises many types; the user needs the first line only
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(path, f"cannot load with datasets: {first}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise DataError(path, f"holds splits {', '.join(loaded)}; save the one split to edit with")
        loaded = next(iter(loaded.values()))
    return loaded.to_list()


def _column_format(columns: Mapping[str, str]) -> Format:
    """A format built from a ``--columns`` spec; errors name the user's column, not ours."""

    def convert(r: Record) -> Fields:
        get = columns.get
        locality = ()
        if get("locality_prompt"):
            locality = ((r.text(columns["locality_prompt"]), r.text(columns["locality_answer"], strip=True)),)
        return {
            "id": r.identifier(columns["id"]) if get("id") else str(r.index),
            "prompt": r.text(columns["prompt"]),
            "target": r.text(columns["target"], strip=True),
            "rephrases": r.texts(columns["rephrases"]) if get("rephrases") else (),
            "locality": locality,
            "subject": r.optional_text(columns["subject"]) if get("subject") else None,
            "irrelevant": r.optional_text(columns["irrelevant"]) if get("irrelevant") else None,
            "meta": {},
        }

    if ("locality_prompt" in columns) != ("locality_answer" in columns):
        raise EditkitError("--columns: locality_prompt and locality_answer go together")
    return Format("columns", frozenset(columns.values()), convert, "records mapped by --columns")


def _check_unique_ids(fields: Sequence[Fields], path: Path) -> None:
    seen: dict[str, int] = {}
    for index, f in enumerate(fields):
        if f["id"] in seen:
            raise DataError(path, f"id '{f['id']}' already used by record {seen[f['id']]}", record=index, field="id")
        seen[f["id"]] = index


def _fill_irrelevant(fields: list[Fields]) -> None:
    """Give each request another record's locality pair as its unrelated text.

    The partner of record i is taken from the far end of the file (n-1-i, moving on when that record has
    no locality pair or the same one), so for any stream shorter than half the file the negatives a method
    trains against are never locality items the same stream is scored on. Deterministic: the irrelevant
    text is part of the stream and of its hash.
    """
    n = len(fields)
    for i, f in enumerate(fields):
        if f.get("irrelevant"):
            continue
        f["irrelevant"] = None
        own = set(f["locality"])
        for step in range(n):
            j = (n - 1 - i - step) % n
            other = fields[j]["locality"]
            if j != i and other and other[0] not in own:
                f["irrelevant"] = f"{other[0][0]} {other[0][1]}"
                break


__all__ = ["BUNDLED", "COLUMN_FIELDS", "DATA_NAMES", "FORMATS", "load_requests", "parse_columns", "resolve_source"]
