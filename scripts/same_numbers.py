"""Check that two runs of the same command (e.g. before and after a refactor) produced the same numbers.

    python scripts/same_numbers.py RUN_A RUN_B
    python scripts/same_numbers.py --means SUMMARY_OR_RUN_A SUMMARY_OR_RUN_B

Compares, for the top directory and every method sub-directory, ``summary.json`` and every row of
``results.jsonl`` and ``routing.jsonl`` exactly, and the per-edit stats of ``edits.jsonl`` on the keys both
runs wrote, ignoring what differs between two runs of identical numbers: wall-clock fields (``seconds``,
``lookup_seconds``, ``timings.jsonl``) and paths. Prints every difference and exits 1 if there is one.

``--means`` compares only the means of two ``summary.json`` files (a run kept in docs/runs often has nothing
else): every (method, metric, scorer, step) both hold must have the same ``mean`` and ``n``; means only one
side holds (a metric added since, such as portability) and other fields that differ (the stream hash after
a change of the stream's records, interval fields) are listed, not counted as differences.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TIMING_KEYS = frozenset({"seconds", "lookup_seconds", "peak_rss_mb"})


def rows(path: Path) -> list:
    if not path.is_file():
        return []
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(a: Path, b: Path) -> int:
    problems: list[str] = []
    checked = 0
    directories = [Path(".")] + sorted(Path(p.name) for p in a.iterdir() if p.is_dir())
    for sub in directories:
        for name in ("summary.json", "results.jsonl", "routing.jsonl", "edits.jsonl"):
            left, right = rows(a / sub / name), rows(b / sub / name)
            if len(left) != len(right):
                problems.append(f"{sub / name}: {len(left)} rows vs {len(right)}")
                continue
            for number, (x, y) in enumerate(zip(left, right), 1):
                checked += 1
                if name == "edits.jsonl":
                    shared = (set(x) & set(y)) - TIMING_KEYS
                    x, y = {k: x[k] for k in shared}, {k: y[k] for k in shared}
                if x != y:
                    keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
                    problems.append(f"{sub / name} row {number}: " + "; ".join(f"{k}: {x.get(k)!r} vs {y.get(k)!r}" for k in keys))
    for line in problems:
        print(line)
    print(f"{checked} rows compared, {len(problems)} differences")
    return 1 if problems else 0


def means(a: Path, b: Path) -> int:
    def keyed(path: Path) -> dict[tuple, dict]:
        file = path / "summary.json" if path.is_dir() else path
        return {(r["method"], r["metric"], r["scorer"], r["step"]): r for r in rows(file)}

    left, right = keyed(a), keyed(b)
    shared = sorted(set(left) & set(right))
    problems = [
        f"{key}: mean {left[key]['mean']!r} n {left[key]['n']} vs mean {right[key]['mean']!r} n {right[key]['n']}"
        for key in shared
        if (left[key]["mean"], left[key]["n"]) != (right[key]["mean"], right[key]["n"])
    ]
    for side, only in (("only in A", set(left) - set(right)), ("only in B", set(right) - set(left))):
        if only:
            print(f"{side} ({len(only)}): " + ", ".join("/".join(map(str, k)) for k in sorted(only)))
    other = sorted({f for k in shared for f in set(left[k]) | set(right[k]) if f not in ("mean", "n") and left[k].get(f) != right[k].get(f)})
    if other:
        print("other fields that differ: " + ", ".join(other))
    for line in problems:
        print(line)
    print(f"{len(shared)} means compared, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "--means":
        sys.exit(means(Path(sys.argv[2]), Path(sys.argv[3])))
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
