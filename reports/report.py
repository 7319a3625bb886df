"""A whole report from results directories: tables in three formats, figures, and a ``report.md`` that
shows them together.

Everything is read and checked before the first file is written, so a refused merge or a corrupt file
leaves no half-written report behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Sequence

from matplotlib.figure import Figure

from editkit.errors import EditkitError
from editkit.evaluation.rundir import claim

from .figures import bar_chart, cost_figure, forgetting_figure, position_figure
from .formats import FORMATS, Table, render, render_markdown
from .contested import contested_table, load_stream
from .loading import load_directory
from .merging import Series, combine
from .routing import RoutingStats, routing_stats, routing_table
from .routing_figures import roc_figure, routing_histograms
from .style import IMAGE_FORMATS, save, styles
from .tables import ordered_scorers, results_tables

REPORT_DIR = "report"
#: the names a report writes (tables, figures, report.md): an earlier report's file of one of these names
#: that this report did not rewrite is removed, so a directory never shows figures of runs no longer in it
_OWN_TABLES = ("table", "routing", "contested")
_OWN_FIGURES = ("bars", "cost", "*-cost", "position-*", "forgetting-*", "*-forgetting-*", "routing-scores", "routing-roc")


@dataclass
class Report:
    series: tuple[Series, ...]
    tables: list[Table]
    routing: list[RoutingStats]
    routing_table: Table | None
    #: the runs' scores split over the stream's contested edits (``--stream``), or None
    contested: Table | None = None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self, fmt: str = "md") -> str:
        """What the command prints: the result tables in ``fmt``, and in Markdown the routing table too."""
        out = render(self.tables, fmt)
        if fmt == "md":
            out += "".join("\n" + render_markdown([t]) for t in (self.routing_table, self.contested) if t is not None)
        return out


def default_out(directories: Sequence[Path]) -> Path:
    if len(directories) != 1:
        raise EditkitError("several directories: pass --out DIR for the merged report")
    return directories[0] / REPORT_DIR


def build_report(directories: Sequence[Path], allow_mixed: bool = False, stream: str | None = None) -> Report:
    """Read, check and merge the directories and compute every table; nothing is written. ``stream``: the
    slice the runs edited (``NAME[@START:COUNT]``), for the contested-edits table (:mod:`.contested`)."""
    series = combine([load_directory(Path(d)) for d in directories], allow_mixed=allow_mixed)
    stats = [st for st in (routing_stats(s) for s in series) if st is not None]
    report = Report(series, results_tables(series), stats, routing_table(stats) if stats else None)
    if stream is not None:
        report.contested, notes = contested_table(series, *load_stream(stream))
        report.notes += notes
    return report


def write_report(report: Report, out: Path, plots: bool = True) -> Report:
    """Write tables (md, csv, tex), figures (PNG + SVG) and ``report.md`` into ``out``."""
    if plots:
        for s in report.series:  # read (and check) what the figures need before the first file is written
            _ = s.run.results, s.run.edits
    if out.exists() and not out.is_dir():
        raise EditkitError(f"--out {out}: exists and is not a directory")
    try:
        claim(out.parent, out.name + "/")  # inside a run directory: the run's --overwrite may remove it
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EditkitError(f"--out {out}: cannot create it ({exc.strerror})") from None
    sections = ["# editkit report", "", "From: " + ", ".join(f"`{d}`" for d in dict.fromkeys(str(s.run.source) for s in report.series)), ""]
    for fmt in FORMATS:
        report.files.append(_write(out / f"table.{fmt}", render(report.tables, fmt)))
    sections.append(render_markdown(report.tables))
    figures: list[tuple[str, Callable[[], Figure | None], str]] = []
    style = styles(report.series)  # once for the whole report: a method keeps its look in every figure
    if plots:
        figures.append(("bars", lambda: bar_chart(report.series, style), "bar chart"))
        if any(s.run.context.every is not None for s in report.series):
            for scorer in ordered_scorers(s for one in report.series for s in one.run.context.scorers):
                figures.append((f"forgetting-{scorer}", lambda scorer=scorer: forgetting_figure(report.series, scorer, style), f"forgetting ({scorer})"))
        else:
            report.notes.append("forgetting: needs an every:K run; these runs are scored only " + _schedules(report.series))
        for scorer in ordered_scorers(s for one in report.series for s in one.run.context.scorers):
            figures.append((f"position-{scorer}", lambda scorer=scorer: position_figure(report.series, scorer, style), f"score by edit position ({scorer})"))
        figures.append(("cost", lambda: cost_figure(report.series, style), "cost per edit"))
    sections += _figures(figures, out, report)
    if report.routing_table is not None:
        for fmt in FORMATS:
            report.files.append(_write(out / f"routing.{fmt}", render([report.routing_table], fmt)))
        sections.append(render_markdown([report.routing_table]))
        if plots:
            routing = [
                ("routing-scores", lambda: routing_histograms(report.routing, style), "routing scores"),
                ("routing-roc", lambda: roc_figure(report.routing, style), "routing ROC"),
            ]
            sections += _figures(routing, out, report)
    else:
        report.notes.append("routing: no method in these directories wrote routing.jsonl")
    if report.contested is not None:
        for fmt in FORMATS:
            report.files.append(_write(out / f"contested.{fmt}", render([report.contested], fmt)))
        sections.append(render_markdown([report.contested]))
    if report.notes:
        sections += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
    report.files.append(_write(out / "report.md", "\n".join(sections)))
    report.notes += prune_stale(out, report.files)
    return report


def prune_stale(out: Path, written: Sequence[Path]) -> list[str]:
    """Remove the files of an earlier report in ``out`` that this one did not rewrite (a routing table or
    a forgetting figure of runs that are no longer merged); a note naming them, or none."""
    keep = {p.name for p in written}
    patterns = [f"{stem}.{fmt}" for stem in _OWN_TABLES for fmt in FORMATS]
    patterns += [f"{stem}.{fmt}" for stem in _OWN_FIGURES for fmt in IMAGE_FORMATS]
    stale = sorted(p for p in out.iterdir() if p.is_file() and p.name not in keep and any(fnmatch(p.name, pat) for pat in patterns))
    for path in stale:
        path.unlink()
    return [f"removed {len(stale)} files of an earlier report in {out} that this one does not write: {', '.join(p.name for p in stale)}"] if stale else []


def _figures(figures: Sequence[tuple[str, Callable[[], Figure | None], str]], out: Path, report: Report) -> list[str]:
    """Draw and save each figure; its Markdown image line, or a note saying why it is missing."""
    lines = []
    for stem, draw, what in figures:
        figure = draw()
        if figure is None:
            report.notes.append(f"{what}: {_WHY_MISSING.get(stem.split('-')[0], 'no data')}")
            continue
        report.files += save(figure, out, stem)
        lines += [f"![{what}]({stem}.png)", ""]
    return lines


def _schedules(series: Sequence[Series]) -> str:
    kinds = {s.run.context.schedule for s in series}
    return "after the whole stream (final)" if kinds == {"final"} else "under " + ", ".join(sorted(kinds))


_WHY_MISSING = {
    "position": "needs results.jsonl and edits.jsonl of a final or every:K run",
    "forgetting": "no every:K run has this scorer",
    "cost": "needs edits.jsonl of an edited run",
    "routing": "no scores with both in-scope and locality prompts",
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
