"""What the Editor contract declares as class attributes, and the middle tier's half-precision training."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
import torch

import editkit.registry as registry
from editkit import EditRequest
from editkit.baseline import UneditedEditor
from editkit.cli import main
from editkit.errors import EditkitError
from editkit.registry import EditorSpec, get_editor_spec
from editkit.testing import tiny_model_and_tokenizer
from test_cli import assert_one_line_error


class NeedsSubject(UneditedEditor):
    is_baseline: ClassVar[bool] = False
    required_fields: ClassVar[tuple[str, ...]] = ("subject",)


def test_required_fields_are_checked_for_the_whole_stream_first():
    spec = EditorSpec("needs-subject", NeedsSubject)
    spec.check_requests([EditRequest("a", "p", "t", subject="S")])
    with pytest.raises(EditkitError, match="method 'needs-subject' needs 'subject' in every request; request 'b' has none"):
        spec.check_requests([EditRequest("a", "p", "t", subject="S"), EditRequest("b", "p", "t"), EditRequest("c", "p", "t")])


def test_a_missing_required_field_stops_the_cli_before_anything_is_written(monkeypatch, tmp_path, tiny_model_dir, capsys):
    monkeypatch.setitem(registry._REGISTRY, "needs-subject", EditorSpec("needs-subject", NeedsSubject))
    data = tmp_path / "edits.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"Item {i} is", "target": "x"}) + "\n" for i in range(2)))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "needs-subject", "--model", str(tiny_model_dir), "--data", str(data), "--no-progress", "--out", str(out)])
    assert_one_line_error(exit_info.value.code, capsys.readouterr().err, "needs 'subject'", "request 'r0'")
    assert not out.exists()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_weight_editor_trains_a_float32_master_copy_on_half_precision_models(dtype):
    """FT on a float16 model wrote nan (Adam's state in half precision); the tier trains a float32 master."""
    model, tok = tiny_model_and_tokenizer()
    model = model.to(dtype)
    editor = get_editor_spec("ft").build(model, tok, get_editor_spec("ft").make_config(lr=1e-2))
    original = editor.weight.detach().clone()
    stats = editor.edit(EditRequest("a", "Capital of Xo is", "Lum"))
    assert editor.weight.dtype == dtype and bool(torch.isfinite(editor.weight).all())
    assert stats["iterations"] > 0 and stats["loss"] == stats["loss"]  # not nan
    assert not torch.equal(editor.weight, original)
    master = editor.master(editor.module_path)  # kept across edits, so small updates accumulate in float32
    assert master.dtype == torch.float32 and torch.equal(master.to(dtype), editor.weight)
    restored = get_editor_spec("ft").build(tiny_model_and_tokenizer()[0].to(dtype), tok)
    restored.load_state_dict(editor.state_dict(), editor.state_metadata())
    assert torch.equal(restored.master(restored.module_path), master) and torch.equal(restored.weight, editor.weight)
    editor.reset()
    assert torch.equal(editor.weight, original)  # the snapshot is restored bit for bit
    assert torch.equal(editor.master(editor.module_path), original.float())


def test_float32_models_train_the_weight_itself():
    model, tok = tiny_model_and_tokenizer()
    editor = get_editor_spec("ft").build(model, tok)
    assert editor.master(editor.module_path) is editor.weight


def test_declared_attributes(monkeypatch):
    specs = {name: get_editor_spec(name) for name in ("none", "ft", "memoir", "grace", "wise")}
    assert [n for n, s in specs.items() if s.editor_class.is_baseline] == ["none"]
    assert [n for n, s in specs.items() if s.editor_class.modifies_base_weights] == ["ft"]
    variants: dict[str, Any] = {n: dict(s.editor_class.conformance_variants) for n, s in specs.items()}
    assert variants["wise"]["retrieve"]["retrieve"] is True
    assert variants["grace"] == {"prompt": {"replacement": "prompt"}}
    assert variants["memoir"]["reference-loop"] == {"fast_edit": False}
    assert variants["memoir"]["plus"] == {
        "protect": "nullspace", "protect_tol": 0.1, "lr": 4.0, "decay": "masked", "router": "rerank",
        "subject_swaps": 16, "subject_margin": 0.02, "subject_calibrate": True, "extra_iter": 10, "early_stop_delta": 1.0,
        "subject_margin_growth": 0.25, "subject_margin_from": 300,
    }  # issue 20
