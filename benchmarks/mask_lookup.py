"""MEMOIR's mask database: best-overlap lookup time and bytes per mask, bit-packed vs a bool matrix.

    python benchmarks/mask_lookup.py [--sizes 10000,100000,1000000] [--width 1536] [--queries 20]
                                     [--threads N] [--no-reference]

Masks are TopHash masks of random activations (k = the official ratio 4096/14336 of ``--width``; 1,536 is
the default model's MLP width). The reference stores one bool per channel (a numpy bool matrix) and scores
a query with ``count_nonzero(matrix & query, axis=1)``, the fastest of the bool-matrix methods tried (torch
column gather, torch AND-sum, a uint8 matmul were 1.7-5x slower). Both must find
the same best overlaps. Prints, per size: milliseconds per lookup (one query at a time), bytes per mask,
and the reference/packed ratios (goal: ≤ 10 ms per lookup at 1M on 2 cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from editkit.methods.memoir.config import OFFICIAL_K_RATIO
from editkit.methods.memoir.tophash import MaskDatabase, pack, top_k_masks

_CHUNK = 50_000


def build(size: int, width: int, k: int, permutation: torch.Tensor, keep_bool: bool, seed: int):
    """A packed database of ``size`` random masks, and the same masks as a bool matrix if asked."""
    generator = torch.Generator().manual_seed(seed)
    database = MaskDatabase(width, capacity=size)
    dense = np.empty((size, width), dtype=np.bool_) if keep_bool else None
    for start in range(0, size, _CHUNK):
        rows = min(_CHUNK, size - start)
        masks = top_k_masks(torch.randn(rows, width, generator=generator), k, permutation)
        database.extend(pack(masks))
        if dense is not None:
            dense[start : start + rows] = masks.numpy()
    return database, dense


def timed(fn, repeats: int) -> tuple[float, list]:
    fn(0)  # warm-up
    results = []
    start = time.perf_counter()
    for i in range(repeats):
        results.append(fn(i))
    return (time.perf_counter() - start) / repeats, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--width", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-reference", action="store_true", help="skip the bool-matrix reference")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width = args.width
    k = round(width * OFFICIAL_K_RATIO)
    permutation = torch.randperm(width, generator=torch.Generator().manual_seed(0))
    queries = top_k_masks(torch.randn(args.queries + 1, width, generator=torch.Generator().manual_seed(1)), k, permutation)
    packed_queries = pack(queries)
    print(f"width {width}, k {k}, torch threads {torch.get_num_threads()}, numpy {np.__version__}")
    print(f"{'masks':>9} {'packed ms':>10} {'B/mask':>7} {'bool ms':>9} {'B/mask':>7} {'time ratio':>10} "
          f"{'bytes ratio':>11} {'batched16 ms/q':>14} {'agree':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        database, dense = build(size, width, k, permutation, not args.no_reference, seed=size)
        packed_ms, packed = timed(lambda i: database.best(packed_queries[i : i + 1]), args.queries)
        batch = packed_queries[: min(16, args.queries)]
        database.best(batch)
        start = time.perf_counter()
        database.best(batch)
        batched_ms = (time.perf_counter() - start) / len(batch) * 1e3
        packed_bytes = database.bytes_per_mask
        line = f"{size:>9} {packed_ms * 1e3:>10.2f} {packed_bytes:>7}"
        if dense is not None:
            bool_queries = queries.numpy()

            def reference(i: int) -> tuple[int, int]:
                counts = np.count_nonzero(dense & bool_queries[i], axis=1)
                best = int(counts.argmax())
                return best, int(counts[best])

            bool_ms, ref = timed(reference, args.queries)
            agree = all(int(p[1][0]) == r[1] for p, r in zip(packed, ref))
            bool_bytes = width  # one byte per channel
            line += (f" {bool_ms * 1e3:>9.2f} {bool_bytes:>7} {bool_ms / packed_ms:>10.2f} "
                     f"{bool_bytes / packed_bytes:>11.2f}")
        else:
            agree = None
            line += f" {'-':>9} {'-':>7} {'-':>10} {'-':>11}"
        print(line + f" {batched_ms:>14.2f} {str(agree):>6}", flush=True)
        del database, dense


if __name__ == "__main__":
    main()
