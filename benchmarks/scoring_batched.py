"""Batched scoring vs one row at a time, in one process, on the same editor and stream.

    python benchmarks/scoring_batched.py [--model ID|PATH] [--data default] [--num-edits 50] [--batch-size 16]

Prints seconds per scorer for both ways, the speed-up ratio, and how many scores differ (batching changes
float rounding, so a near-tie argmax may flip; the count is printed rather than hidden).
"""

from __future__ import annotations

import argparse
import time

from editkit.baseline import UneditedEditor
from editkit.data import load_requests
from editkit.evaluation.scorers import SCORERS
from editkit.evaluation.streams import make_stream
from editkit.models import load_model


def timed_scores(scorer_class, tokenizer, editor, stream, batch_size):
    scorer = scorer_class(tokenizer, batch_size)
    everything = list(range(len(stream)))
    start = time.perf_counter()
    scorer.prepare(editor, stream, [everything])
    rows = scorer.score(editor, stream, len(stream), everything, everything)
    return time.perf_counter() - start, [(r.edit_id, r.metric, r.value) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="default")
    parser.add_argument("--num-edits", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    loaded = load_model(args.model)
    stream = make_stream(load_requests(args.data), args.num_edits).requests
    editor = UneditedEditor(loaded.model, loaded.tokenizer)
    print(f"model {loaded.model_id}, {len(stream)} requests, batch size {args.batch_size} vs 1")
    for name, scorer_class in SCORERS.items():
        batched_s, batched = timed_scores(scorer_class, loaded.tokenizer, editor, stream, args.batch_size)
        single_s, single = timed_scores(scorer_class, loaded.tokenizer, editor, stream, 1)
        differ = sum(a != b for a, b in zip(batched, single))
        print(
            f"{name:>4}: batched {batched_s:6.2f} s, one-by-one {single_s:6.2f} s, "
            f"speed-up {single_s / batched_s:4.1f}x, scores differing {differ}/{len(batched)}"
        )


if __name__ == "__main__":
    main()
