"""Result tables: reliability, generalization, locality and their mean per method, one table per scorer.

Method-agnostic: the rows are whatever methods the results hold. The unedited row comes first as the
reference and is never marked best (its locality is 1 by construction, which no edit can beat).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .formats import Row, Table, markdown_grid, shown
from .merging import Series, caption, is_mixed, scorer_name

METRIC_ORDER = ("reliability", "generalization", "locality")
SHORT = {"reliability": "rel", "generalization": "gen", "locality": "loc"}
#: Teacher-forced first: it is the papers' number, generation exact match the stricter one beside it.
SCORER_ORDER = ("tf", "gen")
COLUMNS = METRIC_ORDER + ("mean",)
HEADERS = ("Rel", "Gen", "Loc", "Mean")


def ordered_scorers(names: Iterable[str]) -> list[str]:
    return sorted(dict.fromkeys(names), key=lambda s: (SCORER_ORDER.index(s) if s in SCORER_ORDER else len(SCORER_ORDER), s))


def final_values(series: Series, scorer: str) -> tuple[float | None, ...]:
    """Rel, Gen, Loc after the whole stream and their mean (None where a metric is missing)."""
    means = {r["metric"]: float(r["mean"]) for r in series.run.final_summary() if r["scorer"] == scorer}
    values = [means.get(m) for m in METRIC_ORDER]
    present = [v for v in values if v is not None]
    mean = sum(present) / len(present) if len(present) == len(values) else None
    return (*values, mean)


def best_marks(values: Sequence[Sequence[float | None]], ranked: Sequence[bool]) -> list[frozenset[int]]:
    """Per row, the columns where it holds the best value among the ranked rows, compared as printed (so a
    tie on the page is a tie in the marks); nothing is marked where fewer than two rows compete."""
    marks: list[set[int]] = [set() for _ in values]
    for column in range(len(values[0]) if values else 0):
        competing = {i: round(v[column], 3) for i, v in enumerate(values) if ranked[i] and v[column] is not None}
        if len(competing) < 2:
            continue
        top = max(competing.values())
        for i, v in competing.items():
            if v == top:
                marks[i].add(column)
    return [frozenset(m) for m in marks]


def results_tables(series: Sequence[Series]) -> list[Table]:
    tables = []
    for scorer in ordered_scorers(s for one in series for s in one.run.context.scorers):
        rows_of = [s for s in series if scorer in s.run.context.scorers]
        values = [final_values(s, scorer) for s in rows_of]
        mixed = is_mixed(rows_of)  # a best across different experiments would rank what does not compare
        marks = best_marks(values, [not (s.is_baseline or mixed) for s in rows_of])
        rows = tuple(
            Row(
                label=s.label,
                values=v,
                best=m,
                extra=_csv_context(s, scorer),
                rule_after=_rule_after(rows_of, i, mixed),
            )
            for i, (s, v, m) in enumerate(zip(rows_of, values, marks))
        )
        baseline = next((s.method for s in rows_of if s.is_baseline), None)
        if mixed:
            note = "No best marked: the rows come from different experiments."
        elif sum(not s.is_baseline for s in rows_of) < 2:
            note = ""  # one edited method: nothing to rank
        else:
            note = "Bold: best per column among the edited methods" + (f" ({baseline} is the unedited reference)." if baseline else ".")
        tables.append(
            Table(
                title="Reliability (Rel), generalization (Gen), locality (Loc) and their mean after the stream",
                caption=caption(rows_of, scorer),
                label_header="method",
                headers=HEADERS,
                keys=COLUMNS,
                rows=rows,
                note=note,
                marked=True,
            )
        )
    return tables


def _rule_after(rows: Sequence[Series], i: int, mixed: bool) -> bool:
    """A rule under the reference row, and between the experiments of a mixed table."""
    if i + 1 == len(rows):
        return False
    here, after = rows[i], rows[i + 1]
    return (mixed and after.source_name != here.source_name) or (here.is_baseline and not after.is_baseline)


def _csv_context(series: Series, scorer: str) -> tuple[tuple[str, str], ...]:
    c = series.run.context
    return (
        ("scorer", scorer),
        ("model", c.model),
        ("dataset", c.dataset),
        ("T", str(c.num_edits)),
        ("stream", c.stream),
        ("schedule", c.schedule),
        ("source", str(series.run.source)),
    )


# ------------------------------------------------------------------ the table `compare` and `run` print
def final_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each method's rows at its last scored step (the end of the stream)."""
    rows = list(rows)
    last: dict[str, int] = {}
    for r in rows:
        last[r["method"]] = max(last.get(r["method"], 0), int(r["step"]))
    return [r for r in rows if int(r["step"]) == last[r["method"]]]


def render_table(rows: Iterable[dict[str, Any]]) -> str:
    """The wide Markdown table a run ends with: every scorer's Rel/Gen/Loc side by side, then one caption line."""
    rows = final_rows(rows)
    if not rows:
        return "(no results)\n"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    columns = [(s, m) for s in ordered_scorers(r["scorer"] for r in rows) for m in METRIC_ORDER if any(r["metric"] == m for r in rows)]
    values = {(r["method"], r["scorer"], r["metric"]): float(r["mean"]) for r in rows}
    header = ["method"] + [f"{s} {SHORT[m]}" for s, m in columns]
    body = [[method] + [shown(values.get((method, s, m))) for s, m in columns] for method in methods]
    meta = rows[0]
    line = f"schedule {meta['schedule']}, step {max(int(r['step']) for r in rows)}, model {meta.get('model', '?')}, dataset {meta.get('dataset', '?')}"
    return markdown_grid(header, body) + "\n" + line + "\n"
