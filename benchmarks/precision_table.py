"""Scores and seconds per edit of the same comparison run in two dtypes, side by side (issue 16's
"precision that never lies" table).

    editkit compare --methods memoir,ft,grace,wise --num-edits 20 --scorers tf --threads 1 --dtype float32 --out A
    editkit compare --methods memoir,ft,grace,wise --num-edits 20 --scorers tf --threads 1 --dtype bfloat16 --out B
    python benchmarks/precision_table.py A B

For every method of both comparisons: teacher-forced rel / gen / loc of each run (from ``summary.json``),
the largest absolute difference between the two runs' means, the median seconds per edit of each
(``edits.jsonl``), how many edits recorded a non-finite loss (a run stops at the first, so this is 0 in
any finished run) and how many fell back to the full forward. Each run's dtype is read from its
``config.json``, so the columns say what was run, not what the command line was meant to be.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

METRICS = ("reliability", "generalization", "locality")


def means(run: Path, scorer: str = "tf") -> dict[str, dict[str, float]]:
    rows = json.loads((run / "summary.json").read_text())
    final = max(r["step"] for r in rows)
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["scorer"] == scorer and r["step"] == final and r["metric"] in METRICS:
            out.setdefault(r["method"], {})[r["metric"]] = r["mean"]
    return out


def edits(run: Path, method: str) -> list[dict]:
    file = run / method / "edits.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.is_file() else []


def dtype(run: Path) -> str:
    config = json.loads(next(run.glob("*/config.json")).read_text())
    return str(config["model"].get("dtype", "?"))


def main(a: Path, b: Path) -> None:
    left, right = means(a), means(b)
    da, db = dtype(a), dtype(b)
    print(f"| method | {da} rel / gen / loc | {db} rel / gen / loc | max diff | {da} s/edit | {db} s/edit | non-finite losses | full loops |")
    print("|---|---|---|---|---|---|---|---|")
    for method in [m for m in left if m in right]:
        x, y = left[method], right[method]
        diff = max(abs(x[k] - y[k]) for k in METRICS)
        cells = []
        bad = full = 0
        for run in (a, b):
            rows = edits(run, method)
            cells.append(f"{statistics.median(r['seconds'] for r in rows):.2f}" if rows else "–")
            bad += sum(1 for r in rows if isinstance(r.get("loss"), float) and not math.isfinite(r["loss"]))
            full += sum(1 for r in rows if r.get("loop") == "full")
        fmt = lambda m: " / ".join(f"{m[k]:.3f}" for k in METRICS)  # noqa: E731
        print(f"| {method} | {fmt(x)} | {fmt(y)} | {diff:.3f} | {cells[0]} | {cells[1]} | {bad} | {full} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
