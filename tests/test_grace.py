"""GRACE's own properties on tiny random Llama models: the codebook rules, exact passthrough outside every
radius, replacement only where the config says, and config errors. The conformance suite covers the rest."""

from __future__ import annotations

import pytest
import torch

from editkit import EditRequest, encode
from editkit.errors import ConfigError
from editkit.methods.grace import GraceConfig, GraceEditor
from editkit.methods.grace.codebook import Codebook
from editkit.methods.grace.editor import last_prompt_positions
from editkit.testing import tiny_model_and_tokenizer


def _editor(**overrides) -> GraceEditor:
    model, tok = tiny_model_and_tokenizer()
    return GraceEditor(model, tok, GraceConfig(**overrides))


def _request(prompt: str, target: str, id: str = "r") -> EditRequest:
    return EditRequest(id=id, prompt=prompt, target=target, rephrases=(), locality=())


def test_codebook_adds_far_keys_expands_same_label_and_splits_conflicts():
    book = Codebook(key_dim=2, value_dim=3, device=torch.device("cpu"))
    value = torch.zeros(3)
    assert book.place(torch.tensor([0.0, 0.0]), value, "a", eps_init=1.0).action == "add"
    assert book.place(torch.tensor([10.0, 0.0]), value, "b", eps_init=1.0).action == "add"  # beyond 1 + 1
    placed = book.place(torch.tensor([1.5, 0.0]), value, "a", eps_init=1.0)  # within 1 + 1, same label
    assert (placed.action, placed.entry, len(book)) == ("expand", 0, 2)
    assert book.radii[0].item() == pytest.approx(1.5)
    split = book.place(torch.tensor([10.0, 1.0]), value, "c", eps_init=1.0)  # near "b", other label
    assert split.action == "split" and len(book) == 3
    assert book.radii[2].item() == pytest.approx(0.5)
    assert book.radii[1].item() == pytest.approx(0.5 - 1e-5)
    entry, distance = book.nearest(torch.tensor([[10.0, 0.9]]))
    assert int(entry[0]) == 2 and distance[0].item() == pytest.approx(0.1, abs=1e-5)


def test_last_prompt_position_for_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.bool)
    assert last_prompt_positions(right).tolist() == [2, 1]
    assert last_prompt_positions(left).tolist() == [4, 4]


def test_rows_outside_every_radius_get_the_base_logits_and_edited_rows_do_not():
    editor = _editor(eps_init=0.5)
    model, tok = tiny_model_and_tokenizer()
    editor.edit(_request("Capital of Xo is", "Lum"))
    editor.edit(_request("Zed plays the", "oboe", "z"))
    prompts = ["Capital of Xo is", "Grass is", "Zed plays the", "The sun rises in the east and"]
    batch = encode(tok, prompts, ["Lum", "x", "oboe", "y"])
    logits = editor.logits(batch)
    with torch.no_grad():
        base = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    scores = editor.routing_scores(batch)
    active = [score >= scores.threshold for score in scores.scores]
    assert active == [True, False, True, False]
    for row, on in enumerate(active):
        same = torch.equal(logits[row], base[row])
        assert same != on, f"row {row}: replaced={on} but logits {'equal' if same else 'differ'}"


def test_last_replacement_changes_only_the_last_prompt_token_output():
    editor = _editor()
    editor.edit(_request("Capital of Xo is", "Lum"))
    tok = editor.tokenizer
    batch = encode(tok, ["Capital of Xo is"], ["Lum"])
    outputs = []
    hook = editor.split.module.register_forward_hook(lambda _m, _a, out: outputs.append(out.detach()))
    try:
        with torch.no_grad():
            editor.model(input_ids=batch.input_ids, use_cache=False)
    finally:
        hook.remove()
    base_out = outputs[0]
    changed = []
    hook = editor.split.module.register_forward_hook(lambda _m, _a, out: changed.append(out.detach()))
    try:
        editor.logits(batch)
    finally:
        hook.remove()
    # the routing hook runs after the capture hook registered before it: compare what the next block sees
    with editor.routing(batch):
        with torch.no_grad():
            captured = []
            h = editor.split.module.register_forward_hook(lambda _m, _a, out: captured.append(out.detach()))
            try:
                editor.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
            finally:
                h.remove()
    last = int(last_prompt_positions(batch.prompt_mask)[0])
    assert torch.equal(captured[0][0, :last], base_out[0, :last])
    assert torch.equal(captured[0][0, last + 1 :], base_out[0, last + 1 :])
    assert torch.equal(captured[0][0, last], editor.codebook.values[0].to(captured[0].dtype))


def test_the_edit_is_learnt_and_reported():
    editor = _editor()
    stats = editor.edit(_request("Capital of Xo is", "Lum"))
    assert stats["action"] == "add" and stats["codebook_size"] == 1
    # one replaced position of a random 4-layer model cannot dictate 4 target tokens; it must still help a lot
    assert stats["loss"] < 0.9 * stats["initial_loss"]
    again = editor.edit(_request("Capital of Xo is", "Lum", "again"))
    assert again["action"] == "expand" and again["codebook_size"] == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eps_init": 0}, "eps_init"),
        ({"n_iter": 0}, "n_iter"),
        ({"replacement": "all"}, "replacement"),
        ({"value_init": "hot"}, "value_init"),
        ({"layer": ""}, "layer"),
    ],
)
def test_bad_config_values_are_rejected_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        GraceConfig(**overrides)
