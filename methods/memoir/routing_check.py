"""How well MEMOIR's router tells an edit's rephrases from everything else, before any training.

    python -m editkit.methods.memoir.routing_check --data zsre-dev [--start S] [--num-edits N] [--set KEY=VALUE ...] [--threads 1]

Stores the mask (and, with ``router=rerank``, the pooled feature; with ``subject_swaps``, the swapped
prompts' mean feature) of every edit prompt, then scores every rephrase (in scope) and locality prompt (out
of scope) with the editor's own ``routing_scores``: ROC-AUC,
the share of each routed at the configured threshold and at nearby ones, and how often a routed rephrase
reads its own edit rather than a sibling question's. This is what the router's options are chosen from on
a dev slice; training does not enter routing, so no edit is trained.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from editkit.batching import encode
from editkit.checks import split_pair
from editkit.data import load_requests
from editkit.errors import EditkitError
from editkit.evaluation.streams import make_stream
from editkit.models import load_model

from .config import MemoirConfig
from .editor import MemoirEditor

_BATCH = 16


def _scores(editor: MemoirEditor, prompts: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """Per prompt: its routing score and the database row routing would read; and the threshold."""
    scores, rows, threshold = [], [], float("nan")
    for start in range(0, len(prompts), _BATCH):
        batch = encode(editor.tokenizer, prompts[start : start + _BATCH], device=editor.device)
        chosen, score, threshold = editor._best_overlaps(editor.split.module_inputs(batch), batch.prompt_mask)
        scores.append(score)
        rows.append(chosen)
    return np.concatenate(scores), np.concatenate(rows), threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="zsre-dev")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--num-edits", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (1 when other jobs share the cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        config = MemoirConfig().override(**dict(split_pair(o) for o in args.overrides))
        stream = make_stream(load_requests(args.data), args.num_edits, start=args.start).requests
        loaded = load_model(args.model)
        editor = MemoirEditor(loaded.model, loaded.tokenizer, config)
        editor.prepare([r.irrelevant for r in stream if r.irrelevant])
        editor.check_requests(stream)
    except EditkitError as exc:  # the CLI's one line and exit code 2, not a traceback
        print(f"routing_check: error: {exc}", file=sys.stderr)
        sys.exit(2)
    editor.remember(stream)

    rephrases = [(editor.edit_rows[i], q) for i, r in enumerate(stream) for q in r.rephrases]
    locality = [p for r in stream for p, _ in r.locality]
    inside, rows, threshold = _scores(editor, [q for _, q in rephrases])
    outside, _, _ = _scores(editor, locality)
    labels = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
    auc = roc_auc_score(labels, np.r_[inside, outside])
    own = np.array([row == owner for row, (owner, _) in zip(rows, rephrases)])
    on = inside >= threshold
    print(f"{len(stream)} edits, router {config.router}, threshold {threshold}, ROC-AUC {auc:.3f}")
    for t in sorted({threshold - 0.1, threshold - 0.05, threshold, threshold + 0.05, threshold + 0.1}):
        print(f"  at {t:.2f}: rephrases on {np.mean(inside >= t):.2f}, locality on {np.mean(outside >= t):.2f}")
    print(f"  rephrases routed to their own edit: {np.mean(on & own):.2f} (best candidate is their own: {own.mean():.2f})")
    for name, values in (("rephrase", inside), ("locality", outside)):
        print(f"  {name} score quantiles 5/25/50/75/95 %: " + " ".join(f"{q:.2f}" for q in np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])))


if __name__ == "__main__":
    main()
