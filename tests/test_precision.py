"""Half precision never lies: a non-finite loss stops the run in one line instead of scoring garbage."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from editkit.errors import EditkitError
from editkit.evaluation.harness import check_finite_losses
from editkit.testing import tiny_model_and_tokenizer


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_stops_with_one_line(value):
    with pytest.raises(EditkitError) as info:
        check_finite_losses("ft", 3, "req-7", {"loss": 1.0, "initial_loss": value, "iterations": 5}, "float16")
    message = str(info.value)
    assert "\n" not in message
    assert "ft: edit 3 (request req-7)" in message and "initial_loss" in message and "bfloat16" in message


def test_finite_and_non_loss_fields_pass():
    check_finite_losses("memoir", 1, "a", {"loss": 0.5, "seconds": math.nan, "loop": "packed", "ok": True})


def test_float16_overflow_stops_the_run_before_writing_the_bad_edit(tmp_path):
    """A tiny model whose logits overflow float16 (its LM head scaled up; every weight still fits float16):
    the first edit's loss is NaN, so the run stops with exit 2 and one line, and no NaN row is on disk."""
    model, tokenizer = tiny_model_and_tokenizer()
    with torch.no_grad():
        model.lm_head.weight.mul_(1e5)  # |w| ~ 2e4 < 65504, but the logits reach ~1e5: inf in float16
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "editkit.cli", "compare", "--model", tmp_path / "model", "--methods", "ft",
         "--num-edits", "2", "--scorers", "tf", "--threads", "1", "--dtype", "float16", "--out", out, "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Writing model shards" not in line]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and "non-finite loss" in lines[0], proc.stderr
    rows = [json.loads(line) for line in (out / "ft" / "edits.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)
