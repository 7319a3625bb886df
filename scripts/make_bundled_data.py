"""Rebuild the bundled streams in editkit/data/bundled/ from the shared ZsRE file.

    python scripts/make_bundled_data.py ../shared/data/zsre/zsre_mend_eval_portability_gpt4.json

The requests are loaded with editkit's own ZsRE loader from the *whole* file and written in editkit's JSONL
schema, so ids (record indices) and irrelevant texts are exactly those of `--data <that file>`: the bundled
`default` stream and `--data zsre... --num-edits N` have the same stream hash.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from editkit.data import load_requests

SLICES = {"default.jsonl": range(0, 300), "zsre-dev.jsonl": range(1000, 1037)}


def main(source: str) -> None:
    requests = load_requests(source)
    out_dir = Path(__file__).resolve().parents[1] / "editkit" / "data" / "bundled"
    for name, rows in SLICES.items():
        with open(out_dir / name, "w", encoding="utf-8") as handle:
            for i in rows:
                handle.write(json.dumps(requests[i].to_json(), ensure_ascii=False) + "\n")
        print(f"{out_dir / name}: {len(rows)} requests")


if __name__ == "__main__":
    main(sys.argv[1])
