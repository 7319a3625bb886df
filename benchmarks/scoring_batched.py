"""Batched scoring vs one row at a time, in one process, on the same editor and stream.

    python benchmarks/scoring_batched.py [--model ID|PATH] [--data default] [--num-edits 50] [--batch-size 16]
                                         [--run RUN_DIR]

``--run`` takes a method's run directory (``runs/x/memoir``): its editor is rebuilt from ``config.json`` and
``state/``, so every batch mixes rows the editor routes to an edit with rows it leaves alone (per-row
routing); without it the unedited model is scored. Prints seconds per scorer for both ways, the speed-up
ratio, and how many scores differ (batching changes float rounding, so a near-tie argmax may flip; the count
is printed rather than hidden), and for a routing editor the share of rows it routed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from editkit import api
from editkit.baseline import UneditedEditor
from editkit.data import load_requests
from editkit.evaluation.routing import routing_prompts, routing_rows
from editkit.evaluation.schedules import Checkpoint
from editkit.evaluation.scorers import SCORERS
from editkit.evaluation.streams import make_stream
from editkit.models import load_model


def timed_scores(scorer_class, tokenizer, unedited, editor, stream, batch_size):
    scorer = scorer_class(tokenizer, batch_size)
    everything = list(range(len(stream)))
    start = time.perf_counter()
    scorer.prepare(unedited, stream, [everything])
    rows = scorer.score(editor, stream, len(stream), everything, everything)
    return time.perf_counter() - start, [(r.edit_id, r.metric, r.value) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="default")
    parser.add_argument("--num-edits", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--run", type=Path, default=None, help="a method's run directory with config.json and state/")
    args = parser.parse_args()

    saved = api.load_run(args.run) if args.run is not None else None  # the run's editor on the model it edited
    loaded = saved.loaded if saved is not None else load_model(args.model)
    stream = make_stream(load_requests(args.data), args.num_edits).requests
    unedited = UneditedEditor(loaded.model, loaded.tokenizer)
    editor = unedited if saved is None else saved.editor
    print(f"model {loaded.model_id}, editor {editor.name}, {len(stream)} requests, batch size {args.batch_size} vs 1")
    everything = tuple(range(len(stream)))
    prompts = routing_prompts(stream, Checkpoint(len(stream), everything, everything))
    routed: dict[str, list[bool]] = {}
    for rows in routing_rows(editor, loaded.tokenizer, prompts, len(stream), args.batch_size):
        for row in rows:
            routed.setdefault(row["kind"], []).append(row["score"] >= row["threshold"])
    if routed:
        print("rows routed to an edit: " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in routed.items()))
    for name, scorer_class in SCORERS.items():
        batched_s, batched = timed_scores(scorer_class, loaded.tokenizer, unedited, editor, stream, args.batch_size)
        single_s, single = timed_scores(scorer_class, loaded.tokenizer, unedited, editor, stream, 1)
        differ = sum(a != b for a, b in zip(batched, single))
        print(
            f"{name:>4}: batched {batched_s:6.2f} s, one-by-one {single_s:6.2f} s, "
            f"speed-up {single_s / batched_s:4.1f}x, scores differing {differ}/{len(batched)}"
        )


if __name__ == "__main__":
    main()
