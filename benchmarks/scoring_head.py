"""Scoring with the LM head only where a scorer reads vs the head at every position, in one process.

    python benchmarks/scoring_head.py [--model ID|PATH] [--data default] [--num-edits 100] [--repeats 2] [--run RUN_DIR]

The teacher-forced scorer asks :meth:`Editor.logits` for the target columns only and generation asks for
the last position of the prefill; a model whose forward takes ``logits_to_keep`` then runs its head (a
fifth of a 135M model's forward) only there. The reference switches that argument off, so the head runs
everywhere and the wanted columns are sliced out afterwards. Prints seconds per scorer both ways, the
ratio, and how many scores differ (expected: none). ``--run`` scores a saved editor instead of the
unedited model, as in ``scoring_batched.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import torch

from editkit import editor as editor_module
from editkit.baseline import UneditedEditor
from editkit.data import load_requests
from editkit.evaluation.scorers import SCORERS
from editkit.evaluation.streams import make_stream
from editkit.models import load_model
from scoring_batched import saved_editor


def timed(scorer, unedited, editor, stream) -> tuple[float, list[float]]:
    everything = list(range(len(stream)))
    start = time.perf_counter()
    scorer.prepare(unedited, stream, [everything])
    rows = scorer.score(editor, stream, len(stream), everything, everything)
    return time.perf_counter() - start, [r.value for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="default")
    parser.add_argument("--num-edits", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run", type=Path, default=None, help="a method's run directory with config.json and state/")
    args = parser.parse_args()
    loaded = load_model(args.model)
    stream = make_stream(load_requests(args.data), args.num_edits).requests
    unedited = UneditedEditor(loaded.model, loaded.tokenizer)
    editor = unedited if args.run is None else saved_editor(args.run, loaded)
    print(f"model {loaded.model_id}, editor {editor.name}, {len(stream)} requests, {torch.get_num_threads()} threads")
    for name, scorer_class in SCORERS.items():
        scorer = scorer_class(loaded.tokenizer, args.batch_size)
        timed(scorer, unedited, editor, stream[:16])  # warm-up: allocator, tokenizer caches
        kept_times, full_times = [], []
        for _ in range(args.repeats):  # interleaved, best of each: load on the machine hits both alike
            with mock.patch.object(editor_module, "_logits_to_keep", lambda _model, _keep: {}):
                seconds, full = timed(scorer, unedited, editor, stream)
                full_times.append(seconds)
            seconds, kept = timed(scorer, unedited, editor, stream)
            kept_times.append(seconds)
        kept_s, full_s = min(kept_times), min(full_times)
        differ = sum(a != b for a, b in zip(kept, full))
        print(f"{name:>4}: head where read {kept_s:6.2f} s, head everywhere {full_s:6.2f} s, "
              f"speed-up {full_s / kept_s:4.2f}x, scores differing {differ}/{len(kept)}")


if __name__ == "__main__":
    main()
