"""One table model, rendered as Markdown (the terminal and READMEs), CSV (analysis) and LaTeX (papers).

Tables are built once and rendered three ways so that the three files can never disagree: the marks, the
caption and the rounding are decided here, not by each format.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Sequence

Cell = float | int | str | None
DECIMALS = 3
FORMATS = ("md", "csv", "tex")


@dataclass(frozen=True)
class Row:
    label: str
    values: tuple[Cell, ...]
    #: indices of ``values`` marked as the best of their column
    best: frozenset[int] = frozenset()
    #: columns only the CSV carries (its rows must stand alone, without the caption)
    extra: tuple[tuple[str, str], ...] = ()
    #: draw a rule below this row (after the reference rows)
    rule_after: bool = False
    #: per value, its 95 % bootstrap interval (low, high), or None; empty: no intervals at all
    intervals: tuple[tuple[float, float] | None, ...] = ()

    def interval(self, i: int) -> tuple[float, float] | None:
        return self.intervals[i] if i < len(self.intervals) else None


@dataclass(frozen=True)
class Table:
    title: str
    caption: str
    label_header: str
    headers: tuple[str, ...]  # shown in Markdown and LaTeX
    keys: tuple[str, ...]  # CSV column names, one per header
    rows: tuple[Row, ...]
    note: str = ""  # what the marks mean
    marked: bool = False  # whether the CSV gets a ``best`` column

    def full_caption(self) -> str:
        return " ".join(part for part in (f"{self.title}.", self.rest_of_caption()) if part)

    def rest_of_caption(self) -> str:
        """The caption after the title: what was measured on what, then what the marks mean."""
        return " ".join(part for part in (f"{self.caption}." if self.caption else "", self.note) if part)


def shown(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{DECIMALS}f}"
    return str(value)


def shown_interval(interval: tuple[float, float] | None) -> str:
    """`` [low, high]`` after a value, or nothing."""
    return "" if interval is None else f" [{interval[0]:.{DECIMALS}f}, {interval[1]:.{DECIMALS}f}]"


def render(tables: Sequence[Table], fmt: str) -> str:
    return {"md": render_markdown, "csv": render_csv, "tex": render_latex}[fmt](tables)


def render_markdown(tables: Sequence[Table]) -> str:
    return "\n".join(_markdown(table) for table in tables)


def _markdown(table: Table) -> str:
    header = [table.label_header, *table.headers]
    body = [
        [row.label, *((_bold_md(shown(v)) if i in row.best else shown(v)) + shown_interval(row.interval(i)) for i, v in enumerate(row.values))]
        for row in table.rows
    ]
    numeric = [all(v is None or isinstance(v, (int, float)) for v in column) for column in zip(*(r.values for r in table.rows))]
    return f"**{table.title}.** {table.rest_of_caption()}\n\n" + markdown_grid(header, body, [False, *numeric])


def markdown_grid(header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A Markdown table whose columns line up in a terminal too. ``right``: per column, whether it is
    right-aligned (numbers), also in rendered Markdown; without it every column is plain left-aligned text."""
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    align = list(right) if right is not None else [False] * len(widths)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, align)) + " |"

    if right is None:
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    else:
        rule = "|" + "|".join(("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1)) for w, r in zip(widths, align)) + "|"
    return "\n".join([line(header), rule, *(line(c) for c in body)]) + "\n"


def _bold_md(text: str) -> str:
    return f"**{text}**"


def render_csv(tables: Sequence[Table]) -> str:
    """All tables in one file, long form: the columns of every table plus its CSV-only context columns;
    values at full precision."""
    first = tables[0]
    extra_keys = list(dict.fromkeys(k for t in tables for row in t.rows for k, _ in row.extra))
    with_intervals = any(row.intervals for t in tables for row in t.rows)
    bounds = [f"{k}_{end}" for k in first.keys for end in ("low", "high")] if with_intervals else []
    header = [first.label_header, *first.keys, *(["best"] if first.marked else []), *bounds, *extra_keys]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for table in tables:
        for row in table.rows:
            extra = dict(row.extra)
            best = [" ".join(table.keys[i] for i in sorted(row.best))] if first.marked else []
            limits = [("" if row.interval(i) is None else row.interval(i)[end]) for i in range(len(first.keys)) for end in (0, 1)] if with_intervals else []  # type: ignore[index]
            writer.writerow([row.label, *("" if v is None else v for v in row.values), *best, *limits, *(extra.get(k, "") for k in extra_keys)])
    return buf.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(tables: Sequence[Table]) -> str:
    return "% tables by editkit report; they need \\usepackage{booktabs}\n" + "\n".join(_latex(t) for t in tables)


def _latex(table: Table) -> str:
    lines = [
        "\\begin{table}[ht]",
        "\\centering",
        f"\\caption{{{latex_escape(table.full_caption())}}}",
        "\\begin{tabular}{l" + "r" * len(table.headers) + "}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in (table.label_header, *table.headers)) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        cells = [latex_escape(row.label)]
        cells += [
            (f"\\textbf{{{shown(v)}}}" if i in row.best else latex_escape(shown(v))) + shown_interval(row.interval(i))
            for i, v in enumerate(row.values)
        ]
        lines.append(" & ".join(cells) + " \\\\")
        if row.rule_after:
            lines.append("\\midrule")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"
