"""The results format: one typed row per line of each results file, written and read through these classes.

A run directory holds ``summary.json`` (a list of :class:`SummaryRow`), ``results.jsonl``
(:class:`ResultRow`), ``edits.jsonl`` (:class:`EditRow`), ``routing.jsonl`` (:class:`RoutingRow`) and
``timings.jsonl`` (:class:`TimingRow`). The writer (:mod:`editkit.evaluation.store`,
:mod:`editkit.evaluation.routing`) builds these rows and the reader (:mod:`editkit.reports.loading`) checks
lines against them, so the two cannot disagree about a field.

Adding a field is one line in its class. A field with a default is optional when reading (files written
before it existed still load, and get the default); a field without one is required. Numeric fields
(annotated ``int`` or ``float``) must hold numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from editkit.errors import EditkitError


@dataclass(frozen=True)
class SummaryRow:
    """One mean of ``summary.json``: a metric under one scorer at one step, over ``n`` items."""

    method: str
    metric: str
    scorer: str
    schedule: str
    step: int
    mean: float
    n: int
    model: str
    dataset: str
    stream: str
    #: 95 % percentile bootstrap interval of ``mean`` over the edits, and the seed and resamples it used
    #: (:mod:`editkit.evaluation.uncertainty`)
    ci_low: float | None = None
    ci_high: float | None = None
    ci_seed: int | None = None
    ci_resamples: int | None = None
    #: whether every prompt went through the model's chat template (part of the protocol)
    chat_template: bool = False
    #: the dev slice a tuned config was selected on (``editkit tune``), None for a config given by hand
    tuned_on: str | None = None
    #: edits of this run up to ``step`` whose fast loop fell back to the full forward (``loop: full`` in
    #: ``edits.jsonl``): the same numbers, at the full forward's cost, counted here so it is never silent
    full_loop_edits: int = 0


@dataclass(frozen=True)
class ResultRow:
    """One scored item of ``results.jsonl`` (a request's reliability, generalization or locality)."""

    method: str
    step: int
    edit_id: str
    metric: str
    scorer: str
    value: float
    model: str
    dataset: str
    stream: str
    schedule: str
    chat_template: bool = False
    tuned_on: str | None = None


@dataclass(frozen=True)
class EditRow:
    """One edit of ``edits.jsonl``: the harness's ``seconds`` and the editor's own stats (``iterations`` and
    whatever else it reports, e.g. ``loss`` or ``loop``), kept flat in the line."""

    method: str
    step: int
    edit_id: str
    iterations: int
    seconds: float
    stats: Mapping[str, Any] = field(default_factory=dict)  # flattened into the line, not a field of its own

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "step": self.step, "edit_id": self.edit_id, **self.stats}


@dataclass(frozen=True)
class RoutingRow:
    """One routing score of ``routing.jsonl``: how in scope an editor found one prompt, and its threshold."""

    method: str
    step: int
    edit_id: str
    kind: str
    score: float
    threshold: float
    score_name: str
    model: str
    dataset: str
    stream: str
    schedule: str
    chat_template: bool = False
    tuned_on: str | None = None


@dataclass(frozen=True)
class TimingRow:
    """One scoring pass of ``timings.jsonl`` (``what``: ``score:tf``, ``routing``...)."""

    method: str
    step: int
    what: str
    seconds: float
    items: int
    peak_rss_mb: float | None = None
    peak_device_mb: float | None = None  # peak CUDA memory (summed over devices); None off CUDA


Row = typing.Union[SummaryRow, ResultRow, EditRow, RoutingRow, TimingRow]


def to_json(row: Any) -> dict[str, Any]:
    """The JSON object of one row, fields in declaration order."""
    custom = getattr(row, "to_json", None)
    return custom() if custom is not None else dataclasses.asdict(row)


@functools.lru_cache(maxsize=None)
def required_fields(row_class: type) -> tuple[str, ...]:
    """The fields every line of this kind must hold (those without a default)."""
    return tuple(
        f.name
        for f in dataclasses.fields(row_class)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )


@functools.lru_cache(maxsize=None)
def number_fields(row_class: type) -> frozenset[str]:
    """The fields that must hold numbers (annotated ``int`` or ``float``, possibly ``| None``)."""
    hints = typing.get_type_hints(row_class)
    numbers = set()
    for name, hint in hints.items():
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
        if any(option in (int, float) for option in options):
            numbers.add(name)
    return frozenset(numbers)


def check_row(row_class: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` (one parsed line) as a dict holding every required field of ``row_class``, numbers where
    numbers belong; else one line naming ``where`` and the field."""
    if not isinstance(data, dict):
        raise EditkitError(f"{where}: expected an object, not {type(data).__name__}")
    for name in required_fields(row_class):
        if name not in data:
            raise EditkitError(f"{where}: no field '{name}'")
    for name in number_fields(row_class):
        value = data.get(name)
        if name in data and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise EditkitError(f"{where}: field '{name}' must be a number, not {value!r}")
        if value is None and name in required_fields(row_class):
            raise EditkitError(f"{where}: field '{name}' must be a number, not None")
    return data
