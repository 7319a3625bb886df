"""Seconds per edit of memory editors on tiny architectures, with the split forward of a reference commit
("before") and of this checkout ("after"), in one process on the same model and requests.

    python benchmarks/architecture_edit_speed.py [--archs gpt2,gemma2,default] [--methods memoir,wise]
                                                 [--num-edits 2] [--before main] [--threads 1]

"before" loads ``editkit/partial.py`` and ``editkit/prefix_cache.py`` as they are at git revision
``--before`` and gives them to the editors in place of the current ones (the methods are the same code in both columns, so the difference is the split
forward alone). Each architecture is built by :mod:`editkit.architectures` with the default model's
tokenizer (a 49K vocabulary, like a real checkpoint); ``default`` is the default model itself. The last
column is the largest difference between the two columns' final edit losses (0 where the split forward
changed nothing the edit computes). Prints which loop each editor ended up using: an
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
from editkit.models import load_model
from editkit.prefixes import context_prefixes
from editkit.registry import get_editor_spec

ROOT = Path(__file__).resolve().parents[1]


def modules_at(revision: str) -> dict[str, object]:
    """``editkit/partial.py`` and ``editkit/prefix_cache.py`` of ``revision`` (the second importing the
    first), imported as modules of the editkit package; their public names, for the editors to use."""
    names: dict[str, object] = {}
    for file, alias in (("partial", "editkit._partial_before"), ("prefix_cache", "editkit._prefix_cache_before")):
        source = subprocess.run(
            ["git", "show", f"{revision}:editkit/{file}.py"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.replace("from .partial import", "from editkit._partial_before import")
        spec = importlib.util.spec_from_loader(alias, loader=None)
        module = importlib.util.module_from_spec(spec)
        module.__package__ = "editkit"
        sys.modules[alias] = module
        exec(compile(source, f"{revision}:editkit/{file}.py", "exec"), module.__dict__)  # noqa: S102 - our own file
        names.update({k: v for k, v in vars(module).items() if not k.startswith("_") and getattr(v, "__module__", None) == alias})
    return names


def current() -> dict[str, object]:
    from editkit import partial, prefix_cache

    return {k: v for m in (partial, prefix_cache) for k, v in vars(m).items() if getattr(v, "__module__", None) == m.__name__}


def loop_of(editor: object, stats: dict) -> str:
    """The loop an edit took: the editor's own ``loop`` field, else its fast/full flag."""
    if "loop" in stats:
        return str(stats["loop"])
    fast = getattr(editor, "_fast", None)
    return "fast" if fast else "full"


def run(method: str, model: torch.nn.Module, tokenizer, requests, names: dict[str, object]) -> tuple[float, list[str], list[float]]:
    """Edit ``requests`` with a fresh ``method`` editor whose module uses ``names`` (split forward, prefix
    cache) in place of its own imports of them."""
    spec = get_editor_spec(method)
    module = sys.modules[spec.editor_class.__module__]
    swapped = {k: getattr(module, k) for k in names if hasattr(module, k)}
    for key in swapped:
        setattr(module, key, names[key])
    try:
        editor = spec.build(model, tokenizer, spec.make_config())
        seconds, loops, losses = [], [], []
        for request in requests:
            start = time.perf_counter()
            stats = editor.edit(request)
            seconds.append(time.perf_counter() - start)
            loops.append(loop_of(editor, stats))
            losses.append(float(stats.get("loss", float("nan"))))
        editor.reset()
    finally:
        for key, value in swapped.items():
            setattr(module, key, value)
    return statistics.median(seconds), loops, losses


def _failure(exc: BaseException) -> str:
    """``file:line: Type: message`` of the innermost editkit frame of an exception (where to fix it)."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if str(ROOT) in f.filename]
    where = f"{Path(frames[-1].filename).relative_to(ROOT)}:{frames[-1].lineno}" if frames else "?"
    message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"{where}: {type(exc).__name__}: {message}"


def timed(method: str, model: torch.nn.Module, tokenizer, requests, names: dict[str, object]) -> tuple[str, str, list[float]]:
    """Median seconds per edit and the loops, as table cells (the failure where an edit raises), and the
    final loss of every edit."""
    try:
        seconds, loops, losses = run(method, model, tokenizer, requests, names)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the next cell still runs
        return "error", _failure(exc), []
    return f"{seconds:.2f}", ",".join(loops), losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="gpt2,gemma2")
    parser.add_argument("--methods", default="memoir,wise")
    parser.add_argument("--num-edits", type=int, default=3)
    parser.add_argument("--before", default="main", help="git revision whose split forward is 'before' ('none': skip)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    after = current()
    before = modules_at(args.before) if args.before != "none" else None
    default = default_tokenizer()
    requests = load_requests("default")[: args.num_edits]
    print(f"| model | method | before ({args.before}) s/edit | loops | after s/edit | loops | ratio | max loss diff |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        if arch == "default":  # the default model itself (the README's numbers must not move)
            loaded = load_model(None, device="cpu")
            model, tokenizer = loaded.model, loaded.tokenizer
        else:
            model, tokenizer = build_architecture(arch, default), default
        model.requires_grad_(False)
        context_prefixes(model, tokenizer)  # generated once per model (cached): not part of either column
        for method in args.methods.split(","):
            t_after, l_after, loss_after = timed(method, model, tokenizer, requests, after)
            t_before, l_before, loss_before = ("-", "-", []) if before is None else timed(method, model, tokenizer, requests, before)
            gap = max((abs(a - b) for a, b in zip(loss_after, loss_before)), default=float("nan"))
            numbers = t_before.replace(".", "", 1).isdigit() and t_after.replace(".", "", 1).isdigit() and float(t_after) > 0
            ratio = f"{float(t_before) / float(t_after):.1f}x" if numbers else "-"
            print(f"| {arch} | {method} | {t_before} | {l_before} | {t_after} | {l_after} | {ratio} | {gap:.2e} |", flush=True)


if __name__ == "__main__":
    main()
