"""Every registered editor on every single-model family of the architecture matrix (issues 16 and 17).

The full conformance suite runs on the tiny Llama (``editkit.testing``); here a cheap subset of its
promises runs on each family of :data:`editkit.architectures.SINGLE` (learned and rotary positions, ALiBi,
soft-capping, post-FFN norms, flattened FFN inputs, in-place residual adds): with no edit the editor is the
base model, one edit makes the target more likely and takes a fast loop (never ``full``), and reset gives
the base logits back. The models use the byte tokenizer (258 tokens), so the whole matrix stays fast.
"""

from __future__ import annotations

import pytest
import torch

from editkit import EditRequest, encode
from editkit.architectures import SINGLE, build_architecture
from editkit.registry import baseline_names
from editkit.testing import tiny_tokenizer
from editkit.testing.plugin import editor_cases, quick

PROBES = ["The capital of Zorbia is", "A cat sat on the mat and"]
#: the subject ends the prompt: ROME/MEMIT/AlphaEdit place v* at the subject's last token, and in a random
#: two-layer model its effect on predictions several tokens later is too weak to test (v* cannot fit there)
REQUEST = EditRequest(id="m0", prompt="The capital city of Zorbia", target=" Quelp", subject="Zorbia")
MATRIX_EDITORS = ("memoir", "ft", "ft-l", "ft-m", "grace", "wise", "rome", "memit", "alphaedit")
CASES = [quick(c) for c in editor_cases(MATRIX_EDITORS) if c.name not in baseline_names() and c.variant == "default"]


def _target_log_prob(editor, tok) -> float:
    batch = encode(tok, [REQUEST.prompt], [REQUEST.target])
    labels = batch.target_labels()[0]
    logits = editor.logits(batch)[0].float()
    keep = labels != -100
    return float(torch.log_softmax(logits[keep], dim=-1).gather(1, labels[keep][:, None]).sum())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("arch", SINGLE)
def test_editor_on_every_architecture(arch, case):
    tok = tiny_tokenizer()
    model = build_architecture(arch, tok)
    probe = encode(tok, PROBES)
    with torch.no_grad():
        base = model(input_ids=probe.input_ids, attention_mask=probe.attention_mask, position_ids=probe.position_ids).logits
    editor = case.build(model, tok)
    torch.testing.assert_close(editor.logits(probe), base, atol=0, rtol=0, msg="logits before any edit")
    before = _target_log_prob(editor, tok)
    stats = editor.edit(REQUEST)
    assert stats.get("loop", "none") != "full", f"{case.id} on {arch} fell back to the full forward"
    assert _target_log_prob(editor, tok) > before
    editor.reset()
    torch.testing.assert_close(editor.logits(probe), base, atol=0, rtol=0, msg="logits after reset")
