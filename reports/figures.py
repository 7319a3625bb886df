"""The result figures: the table as bars, forgetting curves of ``every:K`` runs, and the cost of each edit.

Each function returns a figure, or None when none of the series has the data it needs (a ``final`` run has
no curve, a directory that kept only ``summary.json`` has no per-edit seconds); the caller says so.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .curves import checkpoint_curve, cost_curve, first_checkpoint, median_seconds, position_curve, retention_curve
from .merging import Series, caption, scorer_name
from .style import Style, legend_below, new_figure, rate_axis, title
from .tables import HEADERS, final_values, ordered_scorers

METRIC_TITLES = {
    "reliability": "Reliability: all edits so far",
    "generalization": "Generalization: rephrases of all edits so far",
    "locality": "Locality: the whole stream's locality prompts",
}


def bar_chart(series: Sequence[Series], style: dict[str, Style]) -> Figure:
    """The result table as grouped bars, one panel per scorer."""
    scorers = ordered_scorers(s for one in series for s in one.run.context.scorers)
    figure = new_figure(max(5.0, 4.2 * len(scorers)), 4.4)
    panels = figure.subplots(1, len(scorers), sharey=True, squeeze=False)[0]
    width = 0.8 / len(series)
    for axes, scorer in zip(panels, scorers):
        x = np.arange(len(HEADERS))
        for i, s in enumerate(series):
            values = final_values(s, scorer) if scorer in s.run.context.scorers else (None,) * len(HEADERS)
            heights = [np.nan if v is None else v for v in values]
            look = style[s.label]
            bars = axes.bar(
                x - 0.4 + width * (i + 0.5), heights, width, label=s.legend, color=look.colour, hatch=look.hatch, edgecolor="white", linewidth=0.5
            )
            if len(series) <= 4:
                axes.bar_label(bars, labels=["" if v is None else f"{v:.3f}" for v in values], fontsize=6.5, padding=1.5, rotation=90)
        axes.set_xticks(x, HEADERS)
        axes.set_title(scorer_name(scorer), fontsize=9.5)
        axes.set_ylim(0, 1.15)  # room for the value labels above a bar at 1.0
        axes.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        axes.grid(axis="y", alpha=0.3, linewidth=0.6)
        axes.set_axisbelow(True)
    panels[0].set_ylabel("score (0–1), mean over the stream")
    title(figure, "Results after the whole stream", caption(series))
    legend_below(figure, panels[0])
    return figure


def forgetting_figure(series: Sequence[Series], scorer: str, style: dict[str, Style]) -> Figure | None:
    """Reliability, generalization and locality at every checkpoint, plus the retention of the first K edits."""
    curves = [s for s in series if s.run.context.every is not None and scorer in s.run.context.scorers]
    if not curves:
        return None
    figure = new_figure(9.5, 7.2)
    panels = figure.subplots(2, 2, sharex=True).flatten()
    firsts = sorted({first_checkpoint(s.run) for s in curves})
    retention_title = f"Retention: reliability of the first {firsts[0] if len(firsts) == 1 else 'K'} edits"
    for axes, metric in zip(panels, (*METRIC_TITLES, "retention")):
        for s in curves:
            points = retention_curve(s.run, scorer) if metric == "retention" else checkpoint_curve(s.run, scorer, metric)
            if points:
                _line(axes, points, s, style)
        axes.set_title(METRIC_TITLES.get(metric, retention_title), fontsize=9.5)
        rate_axis(axes, "score (0–1)" if axes in panels[::2] else "")
    steps = sorted({step for s in curves for step, _ in checkpoint_curve(s.run, scorer, "reliability")})
    for axes in panels[2:]:
        axes.set_xlabel("edits applied")
        axes.set_xticks(steps if len(steps) <= 12 else axes.get_xticks())
    if not panels[3].lines:
        panels[3].text(0.5, 0.5, "no results.jsonl: retention needs per-edit scores", ha="center", va="center", transform=panels[3].transAxes, fontsize=8.5)
    title(figure, "Forgetting along the stream", caption(curves, scorer))
    legend_below(figure, panels[0])
    return figure


def position_figure(series: Sequence[Series], scorer: str, style: dict[str, Style], bins: int = 10) -> Figure | None:
    """Reliability and generalization of each edit after the whole stream, by the edit's position in it."""
    metrics = ("reliability", "generalization")
    found = [(s, {m: position_curve(s.run, scorer, m, bins) for m in metrics}) for s in series if scorer in s.run.context.scorers]
    found = [(s, points) for s, points in found if points["reliability"]]
    if not found:
        return None
    curves = [s for s, _ in found]
    figure = new_figure(9.5, 4.4)
    panels = figure.subplots(1, 2, sharey=True)
    for axes, metric in zip(panels, metrics):
        for s, points in found:
            if points[metric]:
                _line(axes, points[metric], s, style)
        axes.set_title(f"{metric.capitalize()} after the last edit, by edit position", fontsize=9.5)
        axes.set_xlabel(f"position of the edit in the stream (mean of {bins} equal bins)")
        rate_axis(axes, "score (0–1)" if axes is panels[0] else "")
    title(figure, "Which edits hold: early edits below late ones is forgetting", caption(curves, scorer))
    legend_below(figure, panels[0])
    return figure


def cost_figure(series: Sequence[Series], style: dict[str, Style]) -> Figure | None:
    """Seconds per edit along the stream, as the harness measured them (the unedited row does no work)."""
    costs = [(s, cost_curve(s.run)) for s in series if not s.is_baseline]
    costs = [(s, c) for s, c in costs if c]
    if not costs:
        return None
    figure = new_figure(7.5, 4.6)
    axes = figure.subplots()
    for s, points in costs:
        _line(axes, points, s, style, label=f"{s.label} (median {median_seconds(points):.1f} s)", markers=len(points) <= 60)
    axes.set_xlabel("edit (position in the stream)")
    axes.set_ylabel("seconds per edit (s)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3, linewidth=0.6)
    title(figure, "Time per edit (wall clock, measured by the harness)", caption([s for s, _ in costs]))
    legend_below(figure, axes)
    return figure


def _line(axes, points, s: Series, style: dict[str, Style], label: str | None = None, markers: bool = True) -> None:
    """One series as a line; open markers, so that two methods on the same point both stay visible."""
    x, y = zip(*points)
    look = style[s.label]
    axes.plot(
        x,
        y,
        label=label or s.legend,
        color=look.colour,
        linestyle=look.linestyle,
        marker=look.marker if markers else None,
        markerfacecolor=look.colour if look.filled else "none",
        markeredgewidth=1.3,
        markersize=look.size,
        linewidth=1.6,
        zorder=look.zorder,
    )
