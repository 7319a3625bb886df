"""Summary tables from ``summary.json`` rows, method-agnostic: rows are whatever methods the file holds."""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Sequence

METRIC_ORDER = ("reliability", "generalization", "locality")
SHORT = {"reliability": "rel", "generalization": "gen", "locality": "loc"}
FORMATS = ("md", "csv", "tex")
#: Teacher-forced first: it is the papers' number, generation exact match the stricter one beside it.
SCORER_ORDER = ("tf", "gen")


def final_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each method's rows at its last scored step (the end of the stream)."""
    rows = list(rows)
    last: dict[str, int] = {}
    for r in rows:
        last[r["method"]] = max(last.get(r["method"], 0), int(r["step"]))
    return [r for r in rows if int(r["step"]) == last[r["method"]]]


def pivot(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]], dict[tuple[str, str, str], float]]:
    """(methods in file order, (scorer, metric) columns, value lookup)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    scorers = sorted(dict.fromkeys(r["scorer"] for r in rows), key=lambda s: (SCORER_ORDER + (s,)).index(s))
    metrics = [m for m in METRIC_ORDER if any(r["metric"] == m for r in rows)]
    columns = [(s, m) for s in scorers for m in metrics]
    values = {(r["method"], r["scorer"], r["metric"]): float(r["mean"]) for r in rows}
    return methods, columns, values


def render_table(rows: Iterable[dict[str, Any]], fmt: str = "md") -> str:
    rows = final_rows(rows)
    if not rows:
        return "(no results)\n"
    methods, columns, values = pivot(rows)
    meta = rows[0]
    header = ["method"] + [f"{s} {SHORT.get(m, m)}" for s, m in columns]
    body = [[method] + [_fmt(values.get((method, s, m))) for s, m in columns] for method in methods]
    caption = f"schedule {meta['schedule']}, step {max(int(r['step']) for r in rows)}, model {meta.get('model', '?')}, dataset {meta.get('dataset', '?')}"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buf.getvalue()
    if fmt == "tex":
        lines = [
            "\\begin{tabular}{l" + "r" * len(columns) + "}",
            "\\toprule",
            " & ".join(header) + " \\\\",
            "\\midrule",
            *(" & ".join(cells) + " \\\\" for cells in body),
            "\\bottomrule",
            "\\end{tabular}",
            f"% {caption}",
        ]
        return "\n".join(lines) + "\n"
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in body), "", caption]) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
