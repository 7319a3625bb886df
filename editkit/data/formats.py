"""Record formats: how one dataset record becomes the fields of an :class:`~editkit.requests.EditRequest`.

Each format is a small declarative object (the keys that identify it and a converter) kept in one table, so
adding a format is one entry here and the loader never grows a per-format ``if`` chain. Converters read
fields through :class:`Record`, which turns every missing, empty or mistyped field into a
:class:`~editkit.errors.DataError` that names the file, the record index and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from editkit.errors import DataError

#: The fields a loader fills; ``irrelevant`` is filled afterwards from another record (see ``loading``).
Fields = dict[str, Any]


@dataclass(frozen=True)
class Record:
    """One raw record plus where it came from, for error messages."""

    data: Mapping[str, Any]
    path: Path
    index: int

    def error(self, message: str, field: str | None = None) -> DataError:
        return DataError(self.path, message, record=self.index, field=field)

    def raw(self, key: str) -> Any:
        if key not in self.data:
            raise self.error("missing field", key)
        return self.data[key]

    def text(self, key: str, *, strip: bool = False) -> str:
        """A non-empty string. ``strip`` for targets, whose stray spaces would change their tokens."""
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.error(f"expected a string, got {type(value).__name__}", key)
        if strip:
            value = value.strip()
        if not value.strip():
            raise self.error("is empty", key)
        return value

    def optional_text(self, key: str) -> str | None:
        if self.data.get(key) is None:
            return None
        return self.text(key)

    def texts(self, key: str, *, required: bool = True) -> tuple[str, ...]:
        """A string or a list of strings (datasets disagree on whether rephrases come one or many)."""
        if key not in self.data and not required:
            return ()
        value = self.raw(key)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
            raise self.error("expected a non-empty string or a list of non-empty strings", key)
        return tuple(items)

    def identifier(self, key: str) -> str:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
            raise self.error("expected a non-empty string or integer id", key)
        return str(value)

    def pairs(self, key: str, prompt_key: str, answer_key: str, *, required: bool = True) -> tuple[tuple[str, str], ...]:
        """A list of ``{prompt_key, answer_key}`` objects as (prompt, answer) pairs."""
        if key not in self.data and not required:
            return ()
        items = self.raw(key)
        if not isinstance(items, list):
            raise self.error("expected a list of objects", key)
        pairs = []
        for j, item in enumerate(items):
            if not isinstance(item, dict):
                raise self.error("expected an object", f"{key}[{j}]")
            values = [item.get(prompt_key), item.get(answer_key)]
            for name, value in zip((prompt_key, answer_key), values):
                if not isinstance(value, str) or not value.strip():
                    raise self.error("missing or not a non-empty string", f"{key}[{j}].{name}")
            pairs.append((values[0], values[1].strip()))
        return tuple(pairs)


@dataclass(frozen=True)
class Format:
    """A dataset layout: the keys that identify it and how a record maps to request fields."""

    name: str
    keys: frozenset[str]
    convert: Callable[[Record], Fields]
    description: str


def _zsre(r: Record) -> Fields:
    # ZsRE has no id field: the record index is the id, so T = 1,000 is records 0-999 as in the papers.
    return {
        "id": str(r.index),
        "prompt": r.text("src"),
        "target": r.text("alt", strip=True),
        "rephrases": r.texts("rephrase"),
        "locality": ((r.text("loc"), r.text("loc_ans", strip=True)),),
        "subject": r.optional_text("subject"),
        "portability": _one_hop(r),
        "meta": {k: r.data[k] for k in ("answers", "pred", "portability") if k in r.data},
    }


def _one_hop(r: Record, key: str = "portability") -> tuple[tuple[str, str], ...]:
    """ZsRE's ``portability``: one object (or a list of them) with "New Question" and "New Answer"; absent
    in files without it. A record that has the key but not a usable question and answer is refused."""
    if r.data.get(key) is None:
        return ()
    items = r.data[key] if isinstance(r.data[key], list) else [r.data[key]]
    pairs = []
    for j, item in enumerate(items):
        where = key if not isinstance(r.data[key], list) else f"{key}[{j}]"
        if not isinstance(item, dict):
            raise r.error("expected an object with 'New Question' and 'New Answer'", where)
        for name in ("New Question", "New Answer"):
            if not isinstance(item.get(name), str) or not item[name].strip():
                raise r.error("missing or not a non-empty string", f"{where}.{name}")
        pairs.append((item["New Question"], item["New Answer"].strip()))
    return tuple(pairs)


def _counterfact(r: Record) -> Fields:
    return {
        "id": r.identifier("case_id"),
        "prompt": r.text("prompt"),
        "target": r.text("target_new", strip=True),
        "rephrases": r.texts("rephrase_prompt"),
        "locality": ((r.text("locality_prompt"), r.text("locality_ground_truth", strip=True)),),
        "subject": r.optional_text("subject"),
        "meta": {"ground_truth": r.data.get("ground_truth")},
    }


def _qaedit(r: Record) -> Fields:
    # ids repeat across NQ/TQA/SQA, so the source is part of the id.
    return {
        "id": f"{r.text('source')}-{r.identifier('id')}",
        "prompt": r.text("prompt"),
        "target": r.text("target", strip=True),
        "rephrases": r.texts("rephrase"),
        "locality": r.pairs("locality", "loc", "loc_ans"),
        "subject": r.optional_text("subject"),
        "meta": {"source": r.data.get("source")},
    }


def _editkit(r: Record) -> Fields:
    meta = r.data.get("meta") or {}
    if not isinstance(meta, dict):
        raise r.error("expected an object", "meta")
    return {
        "id": r.identifier("id"),
        "prompt": r.text("prompt"),
        "target": r.text("target", strip=True),
        "rephrases": r.texts("rephrases", required=False),
        "locality": r.pairs("locality", "prompt", "answer", required=False),
        "subject": r.optional_text("subject"),
        "irrelevant": r.optional_text("irrelevant"),
        "portability": r.pairs("portability", "prompt", "answer", required=False),
        "meta": meta,
    }


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("zsre", frozenset({"src", "alt", "rephrase", "loc", "loc_ans"}), _zsre, "ZsRE, MEND JSON"),
        Format(
            "counterfact",
            frozenset({"case_id", "prompt", "target_new", "rephrase_prompt", "locality_prompt"}),
            _counterfact,
            "CounterFact, flat EasyEdit JSON",
        ),
        Format("qaedit", frozenset({"source", "prompt", "target", "rephrase", "locality"}), _qaedit, "QAEdit JSON"),
        Format("editkit", frozenset({"id", "prompt", "target"}), _editkit, "editkit JSONL (EditRequest.to_json)"),
    )
}


def detect_format(record: Any, path: Path) -> Format:
    """The format whose identifying keys the first record carries (most specific first)."""
    if not isinstance(record, dict):
        raise DataError(path, f"expected an object, got {type(record).__name__}", record=0)
    for fmt in FORMATS.values():
        if fmt.keys <= record.keys():
            return fmt
    known = "; ".join(f"{f.name}: {', '.join(sorted(f.keys))}" for f in FORMATS.values())
    raise DataError(
        path,
        f"unknown record layout (keys: {', '.join(sorted(record)) or 'none'}); expected one of {known}, "
        "or pass --columns",
        record=0,
    )
