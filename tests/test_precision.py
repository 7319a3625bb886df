"""Half precision never lies: a non-finite loss stops the run in one line instead of scoring garbage."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from editkit import EditRequest, encode
from editkit.errors import EditkitError
from editkit.evaluation.harness import check_finite_losses
from editkit.registry import baseline_names
from editkit.testing import tiny_model_and_tokenizer
from editkit.testing.plugin import editor_cases, quick

#: the subject ends the prompt (ROME/MEMIT/AlphaEdit read it there; see test_architecture_matrix)
HALF_REQUEST = EditRequest(id="h0", prompt="The capital city of Zorbia", target=" Quelp", subject="Zorbia")


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
    noise = ("Writing model shards", "the fast edit loop is off")  # the NaN also fails FT's one-off shortcut check
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not any(n in line for n in noise)]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and "non-finite loss" in lines[0], proc.stderr
    rows = [json.loads(line) for line in (out / "ft" / "edits.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)


HALF_CASES = [quick(c) for c in editor_cases() if c.name not in baseline_names() and c.variant == "default"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", HALF_CASES, ids=lambda c: c.id)
def test_every_editor_edits_a_half_precision_model_with_float32_state(case, dtype):
    """Issue 16's "precision that never lies" for every registered editor: on a float16/bfloat16 model one
    edit reports a finite loss, leaves finite logits that differ from the base model's, keeps every
    floating tensor of its edit state in float32 (the master weights of editors that train base weights
    included), and reset gives the base logits back bit for bit."""
    model, tok = tiny_model_and_tokenizer()
    model = model.to(dtype)
    probe = encode(tok, [HALF_REQUEST.prompt, "A cat sat on the mat and"])
    with torch.no_grad():
        base = model(input_ids=probe.input_ids, attention_mask=probe.attention_mask, position_ids=probe.position_ids).logits
    editor = case.build(model, tok)
    editor.prepare(["Ice is cold", "Two plus two is four"])
    stats = editor.edit(HALF_REQUEST)
    check_finite_losses(case.name, 1, HALF_REQUEST.id, stats, str(dtype).removeprefix("torch."))
    assert all(math.isfinite(v) for k, v in stats.items() if "loss" in k and isinstance(v, float)), stats
    after = editor.logits(probe)
    assert bool(torch.isfinite(after).all()) and not torch.equal(after, base)
    state = editor.state_dict()
    floating = {k: t.dtype for k, t in state.items() if t.is_floating_point()}
    assert floating and all(d in (torch.float32, torch.float64) for d in floating.values()), floating
    editor.reset()
    assert torch.equal(editor.logits(probe), base)
