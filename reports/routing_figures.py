"""Routing figures: where each kind of prompt falls on the method's score, and its ROC curve.

The histograms are normalised per kind (share of that kind's prompts), because a stream can carry five
locality prompts per edit and the shapes, not the counts, are what should be compared. In-scope kinds use
the method's colour, locality prompts grey, so the method keeps the colour it has in every other figure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .merging import caption
from .routing import RoutingStats
from .style import BASELINE_COLOUR, Style, legend_below, new_figure, title

BINS = 30


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def routing_histograms(stats: Sequence[RoutingStats], style: dict[str, Style]) -> Figure:
    columns = min(len(stats), 3)
    rows = -(-len(stats) // columns)
    figure = new_figure(4.2 * columns, 3.6 * rows + 0.9)
    panels = figure.subplots(rows, columns, squeeze=False).flatten()
    for axes, st in zip(panels, stats):
        colour = style[st.series.label].colour
        values = np.concatenate([*st.scores.values(), [st.threshold]])
        edges = np.linspace(values.min(), values.max(), BINS + 1) if values.max() > values.min() else BINS
        looks = {
            "locality": dict(histtype="stepfilled", facecolor="#dddddd", edgecolor=BASELINE_COLOUR, hatch="///", linewidth=0.8),
            "edit": dict(histtype="stepfilled", color=colour, alpha=0.45),
            "rephrase": dict(histtype="step", color=colour, linewidth=1.8, linestyle="--"),
        }
        for kind, look in looks.items():
            scores = st.scores[kind]
            if scores.size:
                axes.hist(scores, bins=edges, weights=np.full(scores.size, 1 / scores.size), **look)
        axes.axvline(st.threshold, color="black", linewidth=1.2, linestyle=":")
        axes.set_title(
            f"{st.series.label}: ROC-AUC {'n/a' if st.auc is None else f'{st.auc:.3f}'}\n"
            f"at threshold {st.threshold:.3g}: TPR {_percent(st.tpr)}, FPR {_percent(st.fpr)}",
            fontsize=9,
        )
        axes.set_xlabel(f"{st.score_name}\n(higher = more in scope)")
        axes.set_ylabel("share of that kind's prompts")
        axes.grid(axis="y", alpha=0.3, linewidth=0.6)
    for axes in panels[len(stats):]:
        axes.set_visible(False)
    handles = [  # neutral stand-ins: in the panels the in-scope kinds take each method's own colour
        Patch(facecolor="#444444", alpha=0.45, label="edit prompts (filled, method colour)"),
        Line2D([], [], color="#444444", linestyle="--", linewidth=1.8, label="rephrases (dashed outline, method colour)"),
        Patch(facecolor="#dddddd", edgecolor=BASELINE_COLOUR, hatch="///", label="locality prompts (hatched grey)"),
        Line2D([], [], color="black", linestyle=":", label="threshold (the method's operating point)"),
    ]
    legend_below(figure, handles=handles)
    title(figure, "Routing scores by kind of prompt", caption([st.series for st in stats]))
    return figure


def roc_figure(stats: Sequence[RoutingStats], style: dict[str, Style]) -> Figure | None:
    curves = [st for st in stats if st.roc is not None]
    if not curves:
        return None
    figure = new_figure(5.6, 6.0)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color=BASELINE_COLOUR, linestyle=":", linewidth=1, label="chance")
    for st in curves:
        look = style[st.series.label]
        fpr, tpr = st.roc
        axes.plot(fpr, tpr, color=look.colour, linestyle=look.linestyle, linewidth=1.8, label=f"{st.series.label} (AUC {st.auc:.3f})")
        axes.plot([st.fpr], [st.tpr], marker=look.marker, color=look.colour, markersize=look.size, markeredgecolor="black", linestyle="none", zorder=look.zorder + 1)
    axes.plot([], [], marker="o", color="white", markeredgecolor="black", linestyle="none", label="filled marker: at the method's threshold")
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_aspect("equal")
    axes.set_xlabel("FPR: locality prompts routed to an edit (share)")
    axes.set_ylabel("TPR: edit prompts and rephrases routed (share)")
    axes.grid(alpha=0.3, linewidth=0.6)
    title(figure, "Routing ROC: in scope against out of scope", caption([st.series for st in curves]))
    legend_below(figure, axes)
    return figure
