"""MEMOIR's fast edit loop vs the reference full-forward loop: time per edit and the W_m they produce.

    python benchmarks/memoir_edit_speed.py [--model ID|PATH] [--data default] [--num-edits 5]
                                           [--threads N] [--set key=value ...] [--plain-lower]
                                           [--device auto|cpu|cuda] [--dtype float32|bfloat16|float16]

Both editors share one model (MEMOIR never changes base weights) and receive the same requests in the same
order. The fast loop computes the layers up to the memory once per edit (the context prefixes' part of them once
per model) and evaluates the LM head only at target positions; the reference loop runs every row (the irrelevant text included) through the whole model
at every step. Prints seconds per edit for both, the ratio, seconds per step, and the largest
|W_m(fast) − W_m(reference)| after the last edit (goal: ≥ 6× and ≤ 1e-4; ≤ 3 s per edit at 30 steps).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from editkit.data import load_requests
from editkit.methods.memoir import MemoirConfig, MemoirEditor
from editkit.models import load_model


def _synchronize(device: str) -> None:
    """Wait for queued GPU work, so that an edit's time is its own (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id or path (default: the embedded default model)")
    parser.add_argument("--data", default="default")
    parser.add_argument("--num-edits", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (as editkit's --device)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--skip-reference", action="store_true", help="time the fast loop only")
    parser.add_argument("--plain-lower", action="store_true",
                        help="also time the fast loop without the cached context-prefix states")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="MEMOIR config override")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"model {loaded.model_id} ({loaded.dtype} on {loaded.device}) loaded in {time.perf_counter() - start:.1f} s; "
          f"torch threads {torch.get_num_threads()}")
    overrides = dict(item.split("=", 1) for item in args.set)
    config = MemoirConfig().override(**overrides)
    requests = load_requests(args.data)[: args.num_edits]

    fast = MemoirEditor(loaded.model, loaded.tokenizer, config.override(fast_edit=True))
    start = time.perf_counter()
    fast._ensure_prefixes()
    fast._ensure_background()
    print(f"{fast.module_path}: k = {fast.k} of {fast.width}; one-time set-up (context prefixes + background "
          f"mean, cached per model) {time.perf_counter() - start:.2f} s")
    editors = {"fast": fast}
    if args.plain_lower:
        editors["plain"] = MemoirEditor(loaded.model, loaded.tokenizer, config.override(fast_edit=True))
        editors["plain"].reuse_prefix_states = False
    if not args.skip_reference:
        editors["reference"] = MemoirEditor(loaded.model, loaded.tokenizer, config.override(fast_edit=False))

    seconds: dict[str, list[float]] = {name: [] for name in editors}
    steps: dict[str, list[int]] = {name: [] for name in editors}
    print(f"{'edit':>5} {'editor':>9} {'steps':>5} {'loss':>8} {'seconds':>8} {'s/step':>7}")
    for index, request in enumerate(requests):
        for name, editor in editors.items():
            _synchronize(loaded.device)
            begin = time.perf_counter()
            stats = editor.edit(request)
            _synchronize(loaded.device)
            elapsed = time.perf_counter() - begin
            seconds[name].append(elapsed)
            steps[name].append(stats["iterations"])
            per_step = elapsed / max(1, stats["iterations"])
            print(f"{index:>5} {name:>9} {stats['iterations']:>5} {stats['loss']:>8.4f} {elapsed:>8.2f} {per_step:>7.3f}")

    mean_fast = statistics.mean(seconds["fast"])
    print(f"\nfast:      {mean_fast:.2f} s per edit, {sum(seconds['fast']) / max(1, sum(steps['fast'])):.3f} s per step"
          f" (first edit includes the one-off shortcut check)")
    print(f"fast loop reused the cached prefix states: {fast.reuse_prefix_states}")
    if "plain" in editors:
        mean_plain = statistics.mean(seconds["plain"])
        delta = (fast.memory.weight - editors["plain"].memory.weight).abs().max().item()
        print(f"plain lower pass: {mean_plain:.2f} s per edit; ratio plain/fast {mean_plain / mean_fast:.2f}x, "
              f"max |dW_m| {delta:.2e}")
    if "reference" in editors:
        mean_ref = statistics.mean(seconds["reference"])
        per_step_ratio = (sum(seconds["reference"]) / max(1, sum(steps["reference"]))) / (
            sum(seconds["fast"]) / max(1, sum(steps["fast"]))
        )
        delta = (fast.memory.weight - editors["reference"].memory.weight).abs().max().item()
        print(f"reference: {mean_ref:.2f} s per edit")
        print(f"ratio reference/fast: {mean_ref / mean_fast:.2f}x per edit, {per_step_ratio:.2f}x per step")
        print(f"max |W_m(fast) - W_m(reference)| after {len(requests)} edits: {delta:.2e}")
        print(f"same step counts: {steps['fast'] == steps['reference']}")


if __name__ == "__main__":
    main()
