"""Result tables: reliability, generalization, locality and their mean per method, one table per scorer.

Method-agnostic: the rows are whatever methods the results hold. The unedited row comes first as the
reference and is never marked best (its locality is 1 by construction, which no edit can beat).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from editkit.evaluation.uncertainty import MIN_EDITS_FOR_SIGNIFICANCE, Interval, Scores, combined_mean, significant_leader

from .formats import Row, Table, markdown_grid, shown
from .merging import Series, caption, is_mixed, scorer_name

METRIC_ORDER = ("reliability", "generalization", "locality")
#: KnowEdit's metrics beyond the three, shown after the mean where a run has them
EXTRA_METRICS = ("portability", "fluency")
SHORT = {"reliability": "rel", "generalization": "gen", "locality": "loc", "portability": "port", "fluency": "flu"}
#: Teacher-forced first: it is the papers' number, generation exact match the stricter one beside it.
SCORER_ORDER = ("tf", "gen", "wild", "wild-f1", "wild-judge")
COLUMNS = METRIC_ORDER + ("mean",)
HEADERS = ("Rel", "Gen", "Loc", "Mean")
EXTRA_HEADERS = {"portability": "Port", "fluency": "Flu"}


def ordered_scorers(names: Iterable[str]) -> list[str]:
    return sorted(dict.fromkeys(names), key=lambda s: (SCORER_ORDER.index(s) if s in SCORER_ORDER else len(SCORER_ORDER), s))


def final_values(series: Series, scorer: str, extra: Sequence[str] = ()) -> tuple[float | None, ...]:
    """Rel, Gen, Loc after the whole stream, their mean, then the ``extra`` metrics (None where missing)."""
    means = {r["metric"]: float(r["mean"]) for r in series.run.final_summary() if r["scorer"] == scorer}
    values = [means.get(m) for m in METRIC_ORDER]
    present = [v for v in values if v is not None]
    mean = sum(present) / len(present) if len(present) == len(values) else None
    return (*values, mean, *(means.get(m) for m in extra))


def per_edit_scores(series: Series, scorer: str) -> dict[str, dict[str, float]] | None:
    """Per metric, each edit's score after the whole stream (from ``results.jsonl``), or None when the
    directory kept only its summary. An ``immediate`` run's scores, one step per edit, are pooled as its
    summary pools them."""
    results = series.run.results
    if results is None:
        return None
    pooled = series.run.context.schedule == "immediate"
    last = max(int(r["step"]) for r in series.run.final_summary())
    scores: dict[str, dict[str, float]] = {}
    for r in results:
        if r["scorer"] == scorer and (pooled or int(r["step"]) == last):
            key = f"{r['edit_id']}@{r['step']}" if pooled else str(r["edit_id"])
            scores.setdefault(str(r["metric"]), {})[key] = float(r["value"])
    return scores


def column_metrics(key: str) -> tuple[str, ...]:
    """The metrics a column's number is the mean of."""
    return METRIC_ORDER if key == "mean" else (key,)


def intervals_of(series: Series, scorer: str, keys: Sequence[str], per_edit: dict[str, dict[str, float]] | None) -> tuple[tuple[float, float] | None, ...]:
    """Each column's 95 % bootstrap interval: a metric's from the summary row, the mean's from the
    per-edit scores (its metrics resampled jointly), None where neither is there."""
    rows = {r["metric"]: r for r in series.run.final_summary() if r["scorer"] == scorer}
    out: list[tuple[float, float] | None] = []
    for key in keys:
        row = rows.get(key)
        if row is not None and row.get("ci_low") is not None:
            out.append((float(row["ci_low"]), float(row["ci_high"])))
        elif key == "mean" and per_edit is not None and all(per_edit.get(m) for m in METRIC_ORDER):
            interval: Interval = combined_mean([per_edit[m] for m in METRIC_ORDER])
            out.append((interval.low, interval.high))
        else:
            out.append(None)
    return tuple(out)


def significant_marks(
    keys: Sequence[str], values: Sequence[Sequence[float | None]], per_edit: Sequence[dict[str, dict[str, float]] | None], ranked: Sequence[bool]
) -> list[frozenset[int]] | None:
    """Per row, the columns where it leads every other ranked row by a paired-bootstrap-significant
    margin (95 % interval of the per-edit difference above 0); None when a ranked row has no per-edit
    scores, so no lead can be tested."""
    if any(r and p is None for r, p in zip(ranked, per_edit)):
        return None
    marks: list[set[int]] = [set() for _ in values]
    for column, key in enumerate(keys):
        candidates: dict[int, list[Scores]] = {}
        for i, (rank, scores) in enumerate(zip(ranked, per_edit)):
            if rank and scores is not None and values[i][column] is not None and all(scores.get(m) for m in column_metrics(key)):
                candidates[i] = [scores[m] for m in column_metrics(key)]
        leader = significant_leader(candidates, {i: float(values[i][column]) for i in candidates})  # type: ignore[arg-type]
        if leader is not None:
            marks[leader].add(column)
    return [frozenset(m) for m in marks]


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


def _extra_metrics(series: Sequence[Series]) -> tuple[str, ...]:
    """The metrics beyond Rel/Gen/Loc that some run of the report has (the same columns in every table)."""
    found = {r["metric"] for s in series for r in s.run.final_summary()}
    return tuple(m for m in EXTRA_METRICS if m in found)


def _title(extra: Sequence[str]) -> str:
    if not extra:
        return "Reliability (Rel), generalization (Gen), locality (Loc) and their mean after the stream"
    named = [f"{m} ({EXTRA_HEADERS[m]})" for m in extra]
    rest = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return f"Reliability (Rel), generalization (Gen), locality (Loc), their mean, {rest} after the stream"


def results_tables(series: Sequence[Series]) -> list[Table]:
    tables = []
    extra = _extra_metrics(series)
    keys = COLUMNS + extra
    for scorer in ordered_scorers(s for one in series for s in one.run.context.scorers):
        rows_of = [s for s in series if scorer in s.run.context.scorers]
        values = [final_values(s, scorer, extra) for s in rows_of]
        per_edit = [per_edit_scores(s, scorer) for s in rows_of]
        mixed = is_mixed(rows_of)  # a best across different experiments would rank what does not compare
        ranked = [not (s.is_baseline or mixed) for s in rows_of]
        marks = significant_marks(keys, values, per_edit, ranked)
        rows = tuple(
            Row(
                label=s.label,
                values=v,
                best=m,
                extra=_csv_context(s, scorer),
                rule_after=_rule_after(rows_of, i, mixed),
                intervals=intervals_of(s, scorer, keys, p),
            )
            for i, (s, v, m, p) in enumerate(zip(rows_of, values, marks or [frozenset()] * len(rows_of), per_edit))
        )
        baseline = next((s.method for s in rows_of if s.is_baseline), None)
        if mixed:
            note = "No best marked: the rows come from different experiments."
        elif sum(ranked) < 2:
            note = ""  # one edited method: nothing to rank
        elif marks is None:
            note = "No best marked: without per-edit results (results.jsonl) no lead can be tested for significance."
        else:
            note = (
                "Bold: best per column among the edited methods, only where its lead over every other one is significant "
                f"(paired bootstrap over edits, 95 %, at least {MIN_EDITS_FOR_SIGNIFICANCE} edits)" + (f"; {baseline} is the unedited reference." if baseline else ".")
            )
        note += " In brackets: 95 % bootstrap interval over edits." if any(r.intervals and any(r.intervals) for r in rows) else ""
        tables.append(
            Table(
                title=_title(extra),
                caption=caption(rows_of, scorer),
                label_header="method",
                headers=HEADERS + tuple(EXTRA_HEADERS[m] for m in extra),
                keys=keys,
                rows=rows,
                note=note.strip(),
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


def _short(value: float) -> str:
    """A bound in two decimals without the leading zero (.81), to keep the terminal table narrow."""
    text = f"{value:.2f}"
    return text[1:] if text.startswith("0.") else text


def render_table(rows: Iterable[dict[str, Any]]) -> str:
    """The wide Markdown table a run ends with: every scorer's Rel/Gen/Loc side by side, then one caption line."""
    rows = final_rows(rows)
    if not rows:
        return "(no results)\n"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    present = {(r["scorer"], r["metric"]) for r in rows}
    columns = [(s, m) for s in ordered_scorers(r["scorer"] for r in rows) for m in METRIC_ORDER + EXTRA_METRICS if (s, m) in present]
    by_key = {(r["method"], r["scorer"], r["metric"]): r for r in rows}

    def cell(method: str, scorer: str, metric: str) -> str:
        row = by_key.get((method, scorer, metric))
        if row is None:
            return shown(None)
        if row.get("ci_low") is None:
            return shown(float(row["mean"]))
        return f"{shown(float(row['mean']))} [{_short(float(row['ci_low']))},{_short(float(row['ci_high']))}]"

    header = ["method"] + [f"{s} {SHORT[m]}" for s, m in columns]
    body = [[method] + [cell(method, s, m) for s, m in columns] for method in methods]
    meta = rows[0]
    line = f"schedule {meta['schedule']}, step {max(int(r['step']) for r in rows)}, model {meta.get('model', '?')}, dataset {meta.get('dataset', '?')}"
    line += f", chat template {'on' if meta.get('chat_template') else 'off'}"
    tuned = {r["method"]: r["tuned_on"] for r in rows if r.get("tuned_on")}
    line += "".join(f", {method} tuned on {slice_}" for method, slice_ in tuned.items())
    if any(r.get("ci_low") is not None for r in rows):
        line += "; [95 % bootstrap interval over edits]"
    return markdown_grid(header, body) + "\n" + line + "\n"
