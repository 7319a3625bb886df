"""The report of a whole grid root (``editkit grid``) or seeds root (``--seeds``), in one command.

One table per (model, dataset, schedule, scorer): a row per method or named variant, each value the mean ±
std over the seeds that ran it, with n. The forgetting (every:K schedules) and cost figures of each
(model, dataset, schedule) are drawn from the first seed of every row, as the caption says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from editkit.baseline import BASELINE_METHOD
from editkit.errors import EditkitError

from .formats import FORMATS, Row, Table, render, render_markdown
from .loading import MethodRun, load_directory
from .merging import Series, caption
from .report import prune_stale
from .seeds import Spread, spread
from .tables import METRIC_ORDER, ordered_scorers

GRID_RECORD = "grid.json"
SEED_PREFIX = "seed-"
KEYS = (*METRIC_ORDER, "mean", "n")
HEADERS = ("Rel", "Gen", "Loc", "Mean", "n")


@dataclass(frozen=True)
class Entry:
    """One finished run in a root: which row it belongs to and which seed it measured."""

    run: MethodRun
    label: str  # the method, or a named variant of it
    seed: str
    name: str  # its directory under the root


def is_root(path: Path) -> bool:
    """A grid root, or a ``--seeds`` root (seed-S run directories and no summary of its own)."""
    if (path / GRID_RECORD).is_file():
        return True
    return not (path / "summary.json").is_file() and any((d / "summary.json").is_file() for d in path.glob(f"{SEED_PREFIX}*"))


def collect(root: Path) -> tuple[list[Entry], list[str]]:
    """Every finished run under the root, and notes on the cells left out (not done)."""
    import json

    entries, notes = [], []
    if (root / GRID_RECORD).is_file():
        try:
            cells = json.loads((root / GRID_RECORD).read_text(encoding="utf-8"))["cells"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise EditkitError(f"{root / GRID_RECORD}: not a grid record editkit wrote") from None
        for name, cell in cells.items():
            if cell.get("status") != "done":
                notes.append(f"cell {name}: {cell.get('status')}, not in the tables")
                continue
            for run in load_directory(root / "cells" / name):
                entries.append(Entry(run, str(cell.get("variant", run.method)), str(cell.get("seed", "0")), name))
    else:
        for directory in sorted(root.glob(f"{SEED_PREFIX}*")):
            if not (directory / "summary.json").is_file():
                notes.append(f"{directory.name}: no summary.json, not in the tables")
                continue
            for run in load_directory(directory):
                entries.append(Entry(run, run.method, directory.name[len(SEED_PREFIX) :], f"{directory.name}/{run.method}"))
    if not entries:
        raise EditkitError(f"{root}: no finished run under it yet")
    return entries, notes


def groups(entries: Sequence[Entry]) -> dict[tuple[str, str, str], list[Entry]]:
    out: dict[tuple[str, str, str], list[Entry]] = {}
    for e in entries:
        c = e.run.context
        out.setdefault((c.model, c.dataset, c.schedule), []).append(e)
    return out


def _final(run: MethodRun, scorer: str) -> dict[str, float]:
    means = {r["metric"]: float(r["mean"]) for r in run.final_summary() if r["scorer"] == scorer}
    if all(m in means for m in METRIC_ORDER):
        means["mean"] = sum(means[m] for m in METRIC_ORDER) / len(METRIC_ORDER)
    return means


def group_tables(members: Sequence[Entry]) -> list[Table]:
    """One table per scorer of a (model, dataset, schedule) group."""
    tables = []
    labels = sorted(dict.fromkeys(e.label for e in members), key=lambda label: label != BASELINE_METHOD)  # none first, else plan order
    for scorer in ordered_scorers(s for e in members for s in e.run.context.scorers):
        rows, seeds = [], set()
        for label in labels:
            runs = [e for e in members if e.label == label and scorer in e.run.context.scorers]
            if not runs:
                continue
            seeds |= {e.seed for e in runs}
            finals = [_final(e.run, scorer) for e in runs]
            stats: list[Spread | None] = [spread([f[k] for f in finals if k in f]) for k in (*METRIC_ORDER, "mean")]
            n = max((s.n for s in stats if s is not None), default=0)
            extra = tuple(
                (f"{k}_{part}", "" if s is None or getattr(s, part) is None else f"{getattr(s, part):.6f}")
                for k, s in zip((*METRIC_ORDER, "mean"), stats)
                for part in ("mean", "std")
            )
            rows.append(Row(label, (*(str(s) if s is not None else None for s in stats), n), extra=extra, rule_after=label == BASELINE_METHOD))
        series = [Series(e.run, e.label, e.name) for e in members if scorer in e.run.context.scorers]
        context = caption(_one_per_label(series), scorer)
        tables.append(
            Table(
                title="Reliability (Rel), generalization (Gen), locality (Loc) and their mean after the stream, mean ± std over seeds",
                caption=f"{context}, seeds {', '.join(sorted(seeds, key=_seed_order))}",
                label_header="method",
                headers=HEADERS,
                keys=KEYS,
                rows=tuple(rows),
                note="std: sample standard deviation over the seeds (none with one seed); n: seeds in the row. The unedited row none is run once per stream.",
            )
        )
    return tables


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.lstrip("-").isdigit() else (0, seed)


def _one_per_label(series: Sequence[Series]) -> list[Series]:
    """The first seed's run of each row: what the figures draw (and what a caption describes)."""
    seen: dict[str, Series] = {}
    for s in series:
        seen.setdefault(s.label, s)
    return list(seen.values())


@dataclass
class RootReport:
    root: Path
    tables: list[Table]
    figures: list[tuple[str, list[Series], str]]  # (file stem, series, what)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def text(self, fmt: str = "md") -> str:
        return render(self.tables, fmt)


def build_root_report(root: Path) -> RootReport:
    """Read and check every finished run under ``root``; nothing is written."""
    from editkit.grid.plan import label as safe

    entries, notes = collect(root)
    tables, figures = [], []
    for (model, dataset, schedule), members in groups(entries).items():
        tables += group_tables(members)
        stem = safe(f"{Path(model).name}-{Path(dataset).stem}-{schedule}")
        series = _one_per_label([Series(e.run, e.label, e.name) for e in members])
        figures.append((stem, series, f"{Path(model).name}, {Path(dataset).name}, {schedule}"))
    return RootReport(root, tables, figures, notes)


def write_root_report(report: RootReport, out: Path, plots: bool = True) -> RootReport:
    from .figures import cost_figure, forgetting_figure
    from .style import save, styles

    if plots:
        for _, series, _ in report.figures:  # read (and check) what the figures need before writing
            for s in series:
                _ = s.run.results, s.run.edits
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EditkitError(f"--out {out}: cannot create it ({exc.strerror})") from None
    for fmt in FORMATS:
        path = out / f"table.{fmt}"
        path.write_text(render(report.tables, fmt), encoding="utf-8")
        report.files.append(path)
    sections = ["# editkit report", "", f"From: `{report.root}`", "", render_markdown(report.tables)]
    for stem, series, what in report.figures if plots else ():
        style = styles(series)
        drawn = [(f"{stem}-forgetting-{sc}", forgetting_figure(series, sc, style), f"forgetting ({sc}), {what}") for sc in ordered_scorers(x for s in series for x in s.run.context.scorers)]
        drawn.append((f"{stem}-cost", cost_figure(series, style), f"cost per edit, {what}"))
        for name, figure, caption_text in drawn:
            if figure is None:
                report.notes.append(f"{caption_text}: no figure ({'needs an every:K schedule' if 'forgetting' in name else 'needs edits.jsonl'})")
                continue
            report.files += save(figure, out, name)
            sections += [f"![{caption_text} (first seed of each row)]({name}.png)", ""]
    if report.notes:
        sections += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
    path = out / "report.md"
    path.write_text("\n".join(sections), encoding="utf-8")
    report.files.append(path)
    report.notes += prune_stale(out, report.files)
    return report
