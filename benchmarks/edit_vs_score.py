"""Where a comparison's time goes: editing vs scoring, per method, from a finished run directory.

    python benchmarks/edit_vs_score.py RUN_DIR

Reads each method's ``edits.jsonl`` (seconds of every edit, measured by the harness) and ``timings.jsonl``
(seconds of every scoring pass) and prints seconds per edit, the scoring seconds per scorer and scoring's
share of the method's total, then (row ``all``) of the whole comparison's. The issue 7 goal is scoring
≤ 10 % of the total. Run it on a directory written by ``editkit compare --methods memoir,ft,grace,wise
--num-edits 100``: both halves were measured in the same process, so the split is meaningful even where
absolute times are noisy.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from editkit.evaluation.schema import EditRow, TimingRow
from editkit.reports.loading import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    print("| method | edits | s / edit | editing s | scoring s (by pass) | scoring share |")
    print("|---|---|---|---|---|---|")
    total_editing = total_scoring = 0.0
    for method_dir in sorted(p for p in args.run_dir.iterdir() if (p / "edits.jsonl").is_file()):
        edits = read_jsonl(method_dir / "edits.jsonl", EditRow)
        timings_file = method_dir / "timings.jsonl"
        timings = read_jsonl(timings_file, TimingRow) if timings_file.is_file() else []
        if not timings:
            print(f"| {method_dir.name} | {len(edits)} | – | – | no timings.jsonl (run older than it) | – |")
            continue
        editing = sum(r["seconds"] for r in edits)
        passes: dict[str, float] = defaultdict(float)
        for row in timings:
            passes[row["what"]] += row["seconds"]
        scoring = sum(passes.values())
        detail = ", ".join(f"{what} {seconds:.0f}" for what, seconds in sorted(passes.items()))
        share = scoring / (editing + scoring) if editing + scoring else 0.0
        per_edit = editing / len(edits) if edits else 0.0
        print(f"| {method_dir.name} | {len(edits)} | {per_edit:.2f} | {editing:.0f} | {scoring:.0f} ({detail}) | {share:.0%} |")
        total_editing += editing
        total_scoring += scoring
    if total_editing + total_scoring:
        share = total_scoring / (total_editing + total_scoring)
        print(f"| all | | | {total_editing:.0f} | {total_scoring:.0f} | {share:.0%} |")


if __name__ == "__main__":
    main()
