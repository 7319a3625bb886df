"""``python -m editkit.grid.worker TASK.json OUTCOME.json``: one cell in its own process (the local executor).

A process per cell gives every cell a fresh interpreter (its own torch thread count, no state left over from
another method) and lets the driver see a crash, even SIGKILL, as this process's exit status.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(task_file: str, outcome_file: str) -> int:
    from .cell import execute

    outcome = execute(json.loads(Path(task_file).read_text(encoding="utf-8")))
    tmp = Path(outcome_file + ".tmp")
    tmp.write_text(json.dumps(outcome), encoding="utf-8")
    tmp.replace(outcome_file)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
