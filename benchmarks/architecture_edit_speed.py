"""Seconds per edit of memory editors on tiny architectures, with the split forward of a reference commit
("before") and of this checkout ("after"), in one process on the same model and requests.

    python benchmarks/architecture_edit_speed.py [--archs gpt2,gemma2] [--methods memoir,wise]
                                                 [--num-edits 2] [--before main] [--threads 1]

"before" loads ``editkit/partial.py`` as it is at git revision ``--before`` and gives it to the editors in
place of the current one (the methods are the same code in both columns, so the difference is the split
forward alone). Each architecture is built by :mod:`editkit.architectures` with the default model's
tokenizer (a 49K vocabulary, like a real checkpoint). Prints which loop each editor ended up using: an
editor that cannot reproduce the full forward with the shortcut falls back to the full forward, which is
what makes "before" slow.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from editkit.architectures import build_architecture, default_tokenizer
from editkit.data import load_requests
from editkit.registry import get_editor_spec

ROOT = Path(__file__).resolve().parents[1]


def partial_at(revision: str) -> types.ModuleType:
    """``editkit/partial.py`` of ``revision``, imported as a module of the editkit package."""
    source = subprocess.run(["git", "show", f"{revision}:editkit/partial.py"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("editkit._partial_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "editkit"
    sys.modules[spec.name] = module
    exec(compile(source, f"{revision}:editkit/partial.py", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module


def loop_of(editor: object, stats: dict) -> str:
    """The loop an edit took: the editor's own ``loop`` field, else its fast/full flag."""
    if "loop" in stats:
        return str(stats["loop"])
    fast = getattr(editor, "_fast", None)
    return "fast" if fast else "full"


def run(method: str, model: torch.nn.Module, tokenizer, requests, split_class) -> tuple[float, list[str]]:
    spec = get_editor_spec(method)
    module = sys.modules[spec.editor_class.__module__]
    original = module.SplitForward
    module.SplitForward = split_class
    try:
        editor = spec.build(model, tokenizer, spec.make_config())
        seconds, loops = [], []
        for request in requests:
            start = time.perf_counter()
            stats = editor.edit(request)
            seconds.append(time.perf_counter() - start)
            loops.append(loop_of(editor, stats))
        editor.reset()
    finally:
        module.SplitForward = original
    return statistics.median(seconds), loops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="gpt2,gemma2")
    parser.add_argument("--methods", default="memoir,wise")
    parser.add_argument("--num-edits", type=int, default=2)
    parser.add_argument("--before", default="main", help="git revision whose split forward is 'before'")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from editkit import partial as after

    before = partial_at(args.before)
    tokenizer = default_tokenizer()
    requests = load_requests("default")[: args.num_edits]
    print(f"| architecture | method | before ({args.before}) s/edit | loops | after s/edit | loops | ratio |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        model = build_architecture(arch, tokenizer)
        model.requires_grad_(False)
        for method in args.methods.split(","):
            t_before, l_before = run(method, model, tokenizer, requests, before.SplitForward)
            t_after, l_after = run(method, model, tokenizer, requests, after.SplitForward)
            print(f"| {arch} | {method} | {t_before:.2f} | {','.join(l_before)} | {t_after:.2f} | {','.join(l_after)} "
                  f"| {t_before / t_after:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
