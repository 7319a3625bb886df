"""The numbers behind the line figures, computed from the results files (and testable without drawing).

A forgetting curve is read from ``summary.json`` (its per-checkpoint means); retention of the first K
edits needs the per-edit rows of ``results.jsonl``, because no summary keeps a subset of edits.
"""

from __future__ import annotations

from statistics import median
from typing import Callable

from .loading import MethodRun, Row

Curve = list[tuple[int, float]]  # (edits applied, value)


def checkpoint_curve(run: MethodRun, scorer: str, metric: str) -> Curve:
    """A metric's mean at every checkpoint: over all edits so far (reliability, generalization) or over the
    whole stream's locality set (locality)."""
    points = {int(r["step"]): float(r["mean"]) for r in run.summary if r["scorer"] == scorer and r["metric"] == metric}
    return sorted(points.items())


def retention_curve(run: MethodRun, scorer: str, metric: str = "reliability") -> Curve | None:
    """The mean over the edits scored at the first checkpoint (the first K of the stream), at that and
    every later checkpoint: how well the earliest edits survive the ones after them. None without
    ``results.jsonl``."""
    if run.results is None:
        return None
    rows = [r for r in run.results if r["scorer"] == scorer and r["metric"] == metric]
    if not rows:
        return []
    first_step = min(int(r["step"]) for r in rows)
    first = {r["edit_id"] for r in rows if int(r["step"]) == first_step}
    values: dict[int, list[float]] = {}
    for r in rows:
        if r["edit_id"] in first:
            values.setdefault(int(r["step"]), []).append(float(r["value"]))
    return sorted((step, sum(v) / len(v)) for step, v in values.items())


def position_curve(run: MethodRun, scorer: str, metric: str, bins: int = 10) -> Curve | None:
    """The last checkpoint's per-edit values, in ``bins`` groups of consecutive stream positions: (mean
    position, mean value). Early edits below late ones, even in a ``final`` run, is forgetting. None without
    ``results.jsonl`` and ``edits.jsonl``, or for an ``immediate`` run (each edit scored at its own step)."""
    if run.results is None or run.edits is None or run.context.schedule == "immediate":
        return None
    position = {r["edit_id"]: int(r["step"]) for r in run.edits}
    rows = [r for r in run.results if r["scorer"] == scorer and r["metric"] == metric]
    if not rows:
        return []
    last = max(int(r["step"]) for r in rows)
    points = sorted((position[r["edit_id"]], float(r["value"])) for r in rows if int(r["step"]) == last and r["edit_id"] in position)
    size = max(1, -(-len(points) // bins))
    groups = [points[i : i + size] for i in range(0, len(points), size)]
    return [(sum(p for p, _ in g) / len(g), sum(v for _, v in g) / len(g)) for g in groups]


Split = tuple[tuple[float, int], tuple[float, int]]  # (mean, items) inside a set of edits, and outside it


def _split(rows: list[Row], ids: frozenset[str], step: int | None, value: Callable[[Row], float]) -> Split | None:
    if not rows:
        return None
    at = max(int(r["step"]) for r in rows) if step is None else step
    rows = [r for r in rows if int(r["step"]) == at]
    if not rows:
        return None
    inside = [value(r) for r in rows if r["edit_id"] in ids]
    outside = [value(r) for r in rows if r["edit_id"] not in ids]
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return (mean(inside), len(inside)), (mean(outside), len(outside))


def split_by_edits(run: MethodRun, scorer: str, metric: str, ids: frozenset[str], step: int | None = None) -> Split | None:
    """A checkpoint's (the last, or ``step``) mean of a per-edit metric over the edits in ``ids`` and over
    the rest, each as (mean, items); a side with no items has mean NaN. How a stream property (such as the
    contested edits of :func:`editkit.evaluation.streams.contested_edits`) splits a score. None without
    ``results.jsonl`` or without rows at that step."""
    if run.results is None:
        return None
    rows = [r for r in run.results if r["scorer"] == scorer and r["metric"] == metric]
    return _split(rows, ids, step, lambda r: float(r["value"]))


def routed_by_edits(run: MethodRun, kind: str, ids: frozenset[str], step: int | None = None) -> Split | None:
    """As :func:`split_by_edits` for the share of one kind of prompt (``edit``, ``rephrase``, ``locality``)
    whose routing score reaches its threshold: the memory switched on. None without ``routing.jsonl``."""
    if run.routing is None:
        return None
    rows = [r for r in run.routing if r["kind"] == kind]
    return _split(rows, ids, step, lambda r: float(float(r["score"]) >= float(r["threshold"])))


def first_checkpoint(run: MethodRun) -> int:
    return min(int(r["step"]) for r in run.summary)


def cost_curve(run: MethodRun) -> Curve | None:
    """Seconds the harness measured for each edit, by its position in the stream; None without
    ``edits.jsonl``."""
    if run.edits is None:
        return None
    return sorted((int(r["step"]), float(r["seconds"])) for r in run.edits)


def median_seconds(curve: Curve) -> float:
    return median(v for _, v in curve) if curve else float("nan")
