"""How every figure looks: one colour, marker and line style per method, the same in every figure of a
report, and the same saving (PNG for pages, SVG for papers).

Colours are the Okabe–Ito palette, which stays distinguishable with the common colour-vision deficiencies;
each method also gets its own marker, so lines stay apart in greyscale print. Methods take colours in sorted
order of their names, so a report's colours do not depend on the order the directories were given in; the
unedited reference is always grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .merging import Series

#: Okabe & Ito (2008), yellow last: it is hard to see on white
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
BASELINE_COLOUR = "#999999"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
BASELINE_MARKER = "."
#: one line style per method too, so that two methods lying on the same values stay visible (a dashed line
#: over a solid one shows both colours); the reference is dotted
LINESTYLES = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (3, 1)), (0, (1, 1)))
BASELINE_LINESTYLE = ":"
HATCHES = (None, "///", "...", "xxx")
MARKER_SIZES = (10.0, 8.5, 7.0, 5.5)
BASELINE_MARKER_SIZE = 4.0
IMAGE_FORMATS = ("png", "svg")
DPI = 150
RATE_LIMITS = (-0.03, 1.03)  # 0 and 1 a little inside the frame, so lines lying on them stay visible


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str
    linestyle: str | tuple
    #: how many series of the same method came before (--allow-mixed); those repeats keep the colour and
    #: change the line style, fill their markers and hatch their bars
    repeat: int = 0
    #: marker size in points; each method a different one, so that open markers of methods lying on the same
    #: point nest inside each other instead of hiding one another (the smaller is drawn on top)
    size: float = 6.0

    @property
    def zorder(self) -> float:
        return 3.0 + (MARKER_SIZES[0] - self.size) / 10

    @property
    def filled(self) -> bool:
        return self.repeat % 2 == 1

    @property
    def hatch(self) -> str | None:
        return HATCHES[self.repeat % len(HATCHES)]


def styles(series: Sequence[Series]) -> dict[str, Style]:
    """The style of every series, by label; computed once per report from all its series, so a method
    looks the same in every figure even where only some methods appear."""
    methods = sorted({s.method for s in series if not s.is_baseline})
    seen: dict[str, int] = {}
    out = {}
    for s in series:
        repeat = seen.get(s.method, 0)
        seen[s.method] = repeat + 1
        if s.is_baseline:
            out[s.label] = Style(BASELINE_COLOUR, BASELINE_MARKER, BASELINE_LINESTYLE, repeat, BASELINE_MARKER_SIZE)
            continue
        index = methods.index(s.method)
        out[s.label] = Style(
            OKABE_ITO[index % len(OKABE_ITO)],
            MARKERS[index % len(MARKERS)],
            LINESTYLES[(index + repeat) % len(LINESTYLES)],
            repeat,
            MARKER_SIZES[index % len(MARKER_SIZES)],
        )
    return out


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn by Agg, without pyplot: no global state and no display is ever touched."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def title(figure: Figure, heading: str, caption: str) -> None:
    """A heading and the caption under it, broken only between the caption's comma-separated fields so that
    no field ("schedule every:2") is split over two lines."""
    width = int(figure.get_figwidth() * 13)
    lines: list[str] = []
    for part in caption.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            lines.append(part)
    figure.suptitle("\n".join([heading, *lines]), fontsize=9.5, linespacing=1.4)


def legend_below(figure: Figure, axes: Axes | None = None, handles: Sequence | None = None) -> None:
    """One legend for the whole figure, under the plots, so it never covers a line; as many columns as the
    figure's width holds."""
    if handles is None:
        handles = (axes if axes is not None else figure.axes[0]).get_legend_handles_labels()[0]
    if handles:
        longest = max(len(h.get_label()) for h in handles)
        fits = max(1, int(figure.get_figwidth() * 13 // (longest + 6)))
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), fits, 6), frameon=False, fontsize=8.5)


def rate_axis(axes: Axes, label: str) -> None:
    axes.set_ylim(*RATE_LIMITS)
    axes.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes.set_ylabel(label)
    axes.grid(axis="y", alpha=0.3, linewidth=0.6)


def save(figure: Figure, directory: Path, stem: str) -> list[Path]:
    """The figure as PNG and SVG; the SVG without a date and with fixed ids, so an unchanged figure gives
    an unchanged file (figures are committed next to the READMEs that show them)."""
    paths = []
    with matplotlib.rc_context({"svg.hashsalt": "editkit", "svg.fonttype": "none"}):
        for fmt in IMAGE_FORMATS:
            path = directory / f"{stem}.{fmt}"
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            figure.savefig(path, format=fmt, dpi=DPI, metadata=metadata)
            paths.append(path)
    return paths
