"""The numbers behind the line figures, computed from the results files (and testable without drawing).

A forgetting curve is read from ``summary.json`` (its per-checkpoint means); retention of the first K
edits needs the per-edit rows of ``results.jsonl``, because no summary keeps a subset of edits.
"""

from __future__ import annotations

from statistics import median

from .loading import MethodRun

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
