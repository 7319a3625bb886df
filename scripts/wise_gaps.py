"""How well WISE's activation gap separates in-scope from out-of-scope queries after a few edits.

    python scripts/wise_gaps.py --data zsre-dev [--num-edits N] [--set KEY=VALUE ...]

Applies N edits with the given config, then prints, for edit prompts, rephrases and locality prompts,
the quantiles of gap / threshold (≥ 1 switches the side memory on) and the share that switches it on,
plus the edits' mean final cross-entropy and margin loss and seconds per edit. This is what the margins,
the learning rate and the norm constraint are chosen from on a dev slice (never on a reported slice).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from editkit.batching import encode
from editkit.data import load_requests
from editkit.evaluation.streams import make_stream
from editkit.methods.wise import WiseConfig, WiseEditor
from editkit.models import load_model


def gap_ratios(editor: WiseEditor, prompts: list[str]) -> np.ndarray:
    ratios = []
    for start in range(0, len(prompts), 16):
        scores = editor.routing_scores(encode(editor.tokenizer, prompts[start : start + 16]))
        ratios.append(np.asarray(scores.scores) / scores.threshold)  # >= 1 exactly when the side memory is on
    return np.concatenate(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="zsre-dev")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--num-edits", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = WiseConfig().override(**dict(item.split("=", 1) for item in args.overrides))
    loaded = load_model(None)
    stream = make_stream(load_requests(args.data), args.num_edits, None, args.start)
    editor = WiseEditor(loaded.model, loaded.tokenizer, config)
    stats = [editor.edit(request) for request in stream.requests]
    groups = {
        "edit": [r.prompt for r in stream.requests],
        "rephrase": [p for r in stream.requests for p in r.rephrases],
        "locality": [p for r in stream.requests for p, _ in r.locality],
    }
    print(f"config: {', '.join(args.overrides) or 'defaults'}; {len(stats)} edits")
    for name in ("ce_loss", "margin_loss", "seconds", "edit_gap"):
        print(f"  mean {name}: {np.mean([s.get(name, np.nan) for s in stats]):.3f}")
    for name, prompts in groups.items():
        ratio = gap_ratios(editor, prompts)
        q = np.quantile(ratio, [0.05, 0.25, 0.5, 0.75, 0.95])
        print(f"  {name:<9} gap/threshold 5/25/50/75/95%: {' '.join(f'{v:.2f}' for v in q)}  on: {np.mean(ratio >= 1):.2f}")


if __name__ == "__main__":
    main()
