"""One table from the runs of benchmarks/gpu_check.sh: per run and method, the edits, median seconds per edit,
which loop the edits took, whether every loss was finite, peak host RSS and peak device memory, and the
teacher-forced scores; plus whether two runs (one device vs ``--device-map auto``) scored the same.

    python benchmarks/gpu_check_summary.py RUN_DIR [RUN_DIR ...]

Exits 1 when a run is missing, a loss is not finite, or an edit took the ``full`` loop.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _peak(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return f"{max(values):.0f}" if values else "n/a"


def summarize(run: Path) -> tuple[list[str], bool, dict[str, Any]]:
    """Table lines for one run directory, whether it is sound, and its summary rows keyed for comparison."""
    lines, ok = [], True
    summary = run / "summary.json"
    if not summary.is_file():
        return [f"{run}: no summary.json (the run failed; see its log)"], False, {}
    scores = {}
    for row in json.loads(summary.read_text(encoding="utf-8")):
        scores[(row.get("method"), row.get("scorer"), row.get("metric"))] = row.get("value", row.get("mean"))
    for method_dir in sorted(p for p in run.iterdir() if (p / "edits.jsonl").is_file()):
        edits = _rows(method_dir / "edits.jsonl")
        timings = _rows(method_dir / "timings.jsonl")
        seconds = [e["seconds"] for e in edits if isinstance(e.get("seconds"), (int, float))]
        losses = [e["loss"] for e in edits if isinstance(e.get("loss"), (int, float))]
        finite = all(math.isfinite(v) for v in losses)
        loops = Counter(str(e["loop"]) for e in edits if "loop" in e)
        ok &= finite and "full" not in loops
        lines.append(
            f"| {run.name} | {method_dir.name} | {len(edits)} | {statistics.median(seconds) if seconds else float('nan'):.3f} "
            f"| {', '.join(f'{k}×{v}' for k, v in sorted(loops.items())) or '-'} | {'yes' if finite else 'NO'} "
            f"| {_peak(timings, 'peak_rss_mb')} | {_peak(timings, 'peak_device_mb')} |"
        )
    return lines, ok, scores


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print("| run | method | edits | s/edit (median) | loops | losses finite | peak host MiB | peak device MiB |")
    print("|-----|--------|-------|-----------------|-------|---------------|---------------|-----------------|")
    sound, all_scores = True, []
    for arg in argv:
        lines, ok, scores = summarize(Path(arg))
        print("\n".join(lines))
        sound &= ok
        all_scores.append(scores)
    if len(all_scores) >= 2 and all(all_scores):
        first = all_scores[0]
        for other, name in zip(all_scores[1:], argv[1:]):
            shared = set(first) & set(other)
            diff = max((abs(first[k] - other[k]) for k in shared if isinstance(first[k], float) and isinstance(other[k], float)), default=0.0)
            print(f"scores of {name} vs {argv[0]}: {len(shared)} shared numbers, max |difference| {diff:.4f}")
    print("sound" if sound else "NOT SOUND: a run failed, a loss was not finite or an edit took the full loop")
    return 0 if sound else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
