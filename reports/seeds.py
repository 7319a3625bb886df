"""Mean ± standard deviation over seeds: the same cell run with several seeds gives one row, not several.

A seed changes the stream order (with ``--shuffle``) and every method's own randomness, so the spread over
seeds is what a reader needs to tell a difference between methods from noise. ``std`` is the sample standard
deviation (n − 1 in the denominator); with one seed there is no spread and none is shown. ``n`` is the number
of seeds each value averages, stated in every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .formats import markdown_grid
from .tables import METRIC_ORDER, SHORT, final_rows, ordered_scorers


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float | None  # None with a single seed
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f}" if self.std is None else f"{self.mean:.3f} ± {self.std:.3f}"


def spread(values: Sequence[float]) -> Spread | None:
    values = [float(v) for v in values]
    if not values:
        return None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return Spread(mean, None, 1)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return Spread(mean, math.sqrt(variance), len(values))


def final_means(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], float]:
    """(method, scorer, metric) → mean after the whole stream, from one seed's summary rows; plus the mean
    of Rel/Gen/Loc as metric ``mean`` where all three are there."""
    values = {(r["method"], r["scorer"], r["metric"]): float(r["mean"]) for r in final_rows(rows)}
    for method, scorer in {(m, s) for m, s, _ in values}:
        three = [values.get((method, scorer, metric)) for metric in METRIC_ORDER]
        if all(v is not None for v in three):
            values[(method, scorer, "mean")] = sum(three) / 3  # type: ignore[arg-type]
    return values


def over_seeds(per_seed: Mapping[Any, Mapping[tuple[str, str, str], float]]) -> dict[tuple[str, str, str], Spread]:
    """Each (method, scorer, metric)'s spread over the seeds that measured it."""
    keys = list(dict.fromkeys(k for values in per_seed.values() for k in values))
    out = {}
    for key in keys:
        found = spread([values[key] for values in per_seed.values() if key in values])
        if found is not None:
            out[key] = found
    return out


def render_seed_table(rows_by_seed: Mapping[int, Sequence[Mapping[str, Any]]]) -> str:
    """The table ``--seeds`` ends with: every scorer's Rel/Gen/Loc as mean ± std over the seeds, and n."""
    per_seed = {seed: final_means(rows) for seed, rows in rows_by_seed.items()}
    stats = over_seeds(per_seed)
    if not stats:
        return "(no results)\n"
    methods = list(dict.fromkeys(m for m, _, _ in stats))
    scorers = ordered_scorers(s for _, s, _ in stats)
    columns = [(s, m) for s in scorers for m in METRIC_ORDER if any(k[1:] == (s, m) for k in stats)]
    header = ["method", *(f"{s} {SHORT[m]}" for s, m in columns), "n"]
    body = []
    for method in methods:
        cells = [stats.get((method, s, m)) for s, m in columns]
        n = max((c.n for c in cells if c is not None), default=0)
        body.append([method, *(str(c) if c is not None else "-" for c in cells), str(n)])
    first = next(iter(rows_by_seed.values()))
    meta = final_rows(first)[0] if final_rows(first) else {}
    line = (
        f"mean ± std over seeds {', '.join(map(str, rows_by_seed))} (n = seeds per row); schedule {meta.get('schedule', '?')}, "
        f"model {meta.get('model', '?')}, dataset {meta.get('dataset', '?')}"
    )
    return markdown_grid(header, body) + "\n" + line + "\n"
