"""Grid throughput: the issue's plan run with one cell at a time against two at a time, and the time the
shared ``none`` row saves.

    python benchmarks/grid_parallel.py [--num-edits 20] [--counterfact ../shared/data/counterfact/counterfact-edit-8k.json] [--out runs/bench-grid]

The plan (default model; ZsRE and CounterFact, 20 edits each; memoir, ft, grace; seeds 0, 1; final; tf) runs
twice on the local executor, ``--max-parallel 1`` and ``--max-parallel 2``, each cell with one thread, into
two fresh roots. It prints both wall times and their ratio (the goal is ≥ 1.7× on 2 idle cores), checks that
both roots hold byte-identical results, and times the unedited row of each (model, dataset slice) in this
process: without sharing, every method cell would run it (and the reference predictions) again, so the
saving is that time × (method cells − 1) per slice.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import yaml

from editkit import api
from editkit.grid import expand, run_grid
from editkit.grid.cell import CELLS

COMPARED = ("results.jsonl", "summary.json")


def plan(num_edits: int, counterfact: Path) -> dict:
    return {
        "models": ["default"],
        "datasets": [{"data": "default", "num_edits": num_edits}, {"data": str(counterfact.resolve()), "start": 0, "num_edits": num_edits}],
        "methods": ["memoir", "ft", "grace"],
        "set": {"memoir": {"n_iter": 3}},
        "seeds": [0, 1],
        "schedule": "final",
        "scorers": ["tf"],
        "resources": {"num_cpus": 1, "num_gpus": 0},
        "threads": 1,
    }


def results(root: Path) -> dict[str, bytes]:
    return {f"{d.name}/{n}": (d / n).read_bytes() for d in sorted((root / CELLS).iterdir()) for n in COMPARED}


def timed_grid(grid, root: Path, parallel: int) -> float:
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    result = run_grid(grid, root, max_parallel=parallel, progress=False)
    seconds = time.perf_counter() - start
    if result.failed:
        raise SystemExit(f"cells failed: {', '.join(result.failed)}; see {root / 'logs'}")
    return seconds


def none_seconds(grid) -> dict[str, float]:
    """Reference predictions plus the unedited row of each group, in this process (model already loaded)."""
    out = {}
    for cell in (c for c in grid.cells if c.is_none):
        validated = api.validate(api.Setup(**cell.setup), [api.MethodChoice("none")])
        start = time.perf_counter()
        validated.harness.prepare()
        spec, config = validated.runs[0]
        scratch = Path(f"/tmp/editkit-bench-none-{cell.name}")
        shutil.rmtree(scratch, ignore_errors=True)
        validated.harness.run(spec, config, scratch)
        out[cell.name] = time.perf_counter() - start
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-edits", type=int, default=20)
    parser.add_argument("--counterfact", type=Path, default=Path("../shared/data/counterfact/counterfact-edit-8k.json"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-grid"))
    args = parser.parse_args()
    grid = expand(plan(args.num_edits, args.counterfact))
    methods = sum(not c.is_none for c in grid.cells)
    print(f"plan: {len(grid.cells)} cells ({methods} method cells, {len(grid.cells) - methods} shared none cells), {args.num_edits} edits each, 1 thread per cell")
    sequential = timed_grid(grid, args.out / "parallel-1", 1)
    print(f"--max-parallel 1: {sequential:7.1f} s")
    parallel = timed_grid(grid, args.out / "parallel-2", 2)
    print(f"--max-parallel 2: {parallel:7.1f} s")
    same = results(args.out / "parallel-1") == results(args.out / "parallel-2")
    print(f"speed-up {sequential / parallel:.2f}x; results byte-identical: {same}")
    import torch

    torch.set_num_threads(1)
    saved = 0.0
    for name, seconds in none_seconds(grid).items():
        cells = sum(1 for c in grid.cells if c.group == name and not c.is_none)
        saved += seconds * (cells - 1)
        print(f"none row + reference predictions of {name}: {seconds:.1f} s, shared by {cells} method cells")
    print(f"time the shared none row saves: {saved:.1f} s of cell time ({saved / sequential:.0%} of the sequential grid)")


if __name__ == "__main__":
    main()
