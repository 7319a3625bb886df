"""How well MEMOIR's TopHash masks separate in-scope from out-of-scope queries, before any editing.

    python scripts/memoir_overlaps.py --data zsre-dev [--start S] [--num-edits N] [--set KEY=VALUE ...]

Stores the mask of every edit prompt (no training: routing depends only on masks), then prints the quantiles
of the best overlap for rephrases and for locality prompts, how often a rephrase's best mask is its own
edit's, and the share of each that switches the memory on at several τ. This is what τ, k, the layer and
the aggregation are chosen from on a dev slice.
"""

from __future__ import annotations

import argparse

import numpy as np

from editkit import api
from editkit.methods.memoir import MemoirEditor
from editkit.methods.memoir.tophash import pack

TAUS = (0.4, 0.45, 0.5, 0.55, 0.6)


def best_overlaps(editor: MemoirEditor, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rows, counts = editor.database.best(pack(editor.prompt_masks(prompts)))
    return rows, counts / editor.k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="zsre-dev")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--num-edits", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    setup = api.Setup(data=args.data, start=args.start, num_edits=args.num_edits, model=args.model)
    ready = api.ready_editor(setup, api.MethodChoice("memoir", dict(o.split("=", 1) for o in args.overrides)))
    editor, stream, config = ready.editor, ready.stream.requests, ready.editor.config
    owners = [editor.database.add(row)[0] for row in pack(editor.prompt_masks([r.prompt for r in stream]))]

    rephrases = [(i, q) for i, r in enumerate(stream) for q in r.rephrases]
    locality = [p for r in stream for p, _ in r.locality]
    groups = {
        "rephrase": best_overlaps(editor, [q for _, q in rephrases]),
        "locality": best_overlaps(editor, locality),
    }
    print(f"{len(stream)} edits, layer {editor.module_path}, k {editor.k}, {config.aggregation}")
    print(f"{'':>9} {'q05':>5} {'q25':>5} {'q50':>5} {'q75':>5} {'q95':>5}  " + " ".join(f"on@{t:<4}" for t in TAUS))
    for name, (_, overlap) in groups.items():
        quantiles = np.quantile(overlap, [0.05, 0.25, 0.5, 0.75, 0.95])
        shares = [(overlap >= t).mean() for t in TAUS]
        print(f"{name:>9} " + " ".join(f"{q:5.2f}" for q in quantiles) + "  " + " ".join(f"{s:7.2f}" for s in shares))
    rows, _ = groups["rephrase"]
    own = np.mean([rows[j] == owners[i] for j, (i, _) in enumerate(rephrases)])
    print(f"a rephrase's best mask is its own edit's for {own:.0%} of rephrases")


if __name__ == "__main__":
    main()
