"""The locate-then-edit family's fast v* loop vs its full-forward loop: seconds per v* and the v* they give.

    python benchmarks/value_loop_speed.py [--methods rome,memit] [--model ID|PATH] [--data default]
                                          [--num-edits 2] [--threads N] [--device auto|cpu|cuda]
                                          [--dtype float32|bfloat16|float16]

For each method, two editors on one model optimise v* for the same requests with the same templates and
options: one through :class:`editkit.locate.values.ValueLoop` as an edit does (the blocks up to the point
where v* joins once per request, then only the blocks above, the LM head only where the loss reads; the
first request includes the one-off check against the full forward), the other with the loop forced to the
full forward. No weight is updated, so both see the same model. Prints seconds per v*, the ratio, the steps
taken and the largest |v*(fast) − v*(full)| relative to |v*|.
"""

from __future__ import annotations

import argparse
import time

import torch

from editkit.data import load_requests
from editkit.locate.subjects import context_templates
from editkit.locate.values import ValueOptions, optimise_value
from editkit.models import load_model
from editkit.registry import get_editor_spec


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="rome,memit")
    parser.add_argument("--model", default=None, help="model id or path (default: the embedded default model)")
    parser.add_argument("--data", default="default")
    parser.add_argument("--num-edits", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    print(f"model {loaded.model_id} ({loaded.dtype} on {device}); torch threads {torch.get_num_threads()}")
    requests = load_requests(args.data)[: args.num_edits]
    for name in args.methods.split(","):
        spec = get_editor_spec(name)
        fast, full = spec.build(model, tokenizer), spec.build(model, tokenizer)
        full.value_loop.fast_path.fall_back("the benchmark's reference")
        cfg = fast.config
        templates = [t for group in context_templates(model, tokenizer, cfg.context_template_length_params, cfg.seed) for t in group]
        options = ValueOptions(cfg.v_num_grad_steps, cfg.v_lr, cfg.v_weight_decay, cfg.clamp_norm_factor, cfg.kl_factor)
        times: dict[str, list[float]] = {"fast": [], "full": []}
        for request in requests:
            runs = {}  # loop -> (v*, info)
            for key, editor in (("fast", fast), ("full", full)):
                _synchronize(device)
                start = time.perf_counter()
                runs[key] = optimise_value(model, tokenizer, request, templates, editor.value_loop, options)
                _synchronize(device)
                times[key].append(time.perf_counter() - start)
            (v_fast, i_fast), (v_full, i_full) = runs["fast"], runs["full"]
            gap = float((v_fast - v_full).abs().max() / v_full.norm())
            print(
                f"{name} {request.id}: fast {times['fast'][-1]:.1f} s ({i_fast['loop']}, {i_fast['iterations']} steps), "
                f"full {times['full'][-1]:.1f} s ({i_full['iterations']} steps), max |dv|/|v| {gap:.1e}",
                flush=True,
            )
        fast_s, full_s = sum(times["fast"]) / len(requests), sum(times["full"]) / len(requests)
        print(f"{name}: {len(templates)} templates; fast {fast_s:.1f} s per v*, full {full_s:.1f} s: {full_s / fast_s:.2f}x")


if __name__ == "__main__":
    main()
