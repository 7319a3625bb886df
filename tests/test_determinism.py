"""The same command and seed give byte-identical results.jsonl and summary.json files.

Two separate processes with different hash seeds (so nothing may depend on set or dict-of-object order,
or on what else ran in the process); config.json is left out because it records the time and the command,
edits.jsonl because it records seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import editkit


def test_same_command_and_seed_give_identical_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "edits.jsonl"
    rows = [
        {"id": f"r{i}", "prompt": f"Who made item {i}?", "target": f"maker {i}", "rephrases": [f"Item {i} was made by"],
         "locality": [{"prompt": f"Fact {i} is", "answer": "true"}], "subject": f"item {i}"}
        for i in range(4)
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    methods = [name for name in editkit.available_editors() if name != "none"]
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run-{hash_seed}"
        command = [sys.executable, "-m", "editkit.cli", "compare", "--methods", ",".join(methods), "--model", str(tiny_model_dir),
                   "--data", str(data), "--schedule", "every:2", "--seed", "3", "--threads", "1", "--no-progress", "--out", str(out)]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append(out)
    first, second = outputs
    compared = sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.name in ("results.jsonl", "summary.json"))
    assert len(compared) == 1 + 2 * (len(methods) + 1)  # the combined summary, then each method and 'none'
    for name in compared:
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs between two identical runs"
