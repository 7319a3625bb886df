"""The split forward against each family's own forward, over the whole architecture matrix (float32).

    python benchmarks/split_forward_matrix.py [--layer 1] [--dtype float32]

Prints, per architecture, the max |logit difference| of the padded and packed split forward (with a random
change at the FFN output of block ``--layer``) and of the prefix-cache lower pass, whether the block passes the
change straight through (else the editor's change runs through the rest of the block), and the one-line
refusal for an architecture editkit cannot edit (the MoE entry).
"""

from __future__ import annotations

import argparse

import torch

from editkit.architectures import ARCHITECTURES, build_architecture, split_forward_differences
from editkit.errors import EditkitError
from editkit.models import resolve_dtype
from editkit.testing import tiny_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    dtype = resolve_dtype(args.dtype)[1]
    tokenizer = tiny_tokenizer()
    print("| architecture | class | padded max diff | packed max diff | prefix max diff | change passes through |")
    print("|---|---|---|---|---|---|")
    for name in ARCHITECTURES:
        model = build_architecture(name, tokenizer).to(dtype)
        try:
            d = split_forward_differences(model, tokenizer, args.layer)
        except EditkitError as exc:
            print(f"| {name} | {type(model).__name__} | refused: {exc} | | | |")
            continue
        print(f"| {name} | {type(model).__name__} | {d['padded']:.2e} | {d['packed']:.2e} | {d['prefix']:.2e} "
              f"| {'yes' if d['additive'] else 'no (post-FFN norm)'} |")


if __name__ == "__main__":
    with torch.no_grad():
        main()
