"""FT-specific behaviour (the shared contract is in test_conformance.py)."""

from __future__ import annotations

import pytest
import torch

import editkit
from editkit import EditRequest, encode
from editkit.batching import tokenize_pair
from editkit.errors import ConfigError, EditkitError
from editkit.methods.ft import FTConfig, FTEditor
from editkit.models import load_model
from editkit.testing import tiny_model_and_tokenizer

REQUEST = EditRequest("xo", "Capital of Xo is", "Lum")


def tf_accuracy(editor, tok, prompt, target):
    batch = encode(tok, [prompt], [target])
    labels = batch.target_labels()
    mask = labels != -100
    return float((editor.logits(batch)[mask].argmax(-1) == labels[mask]).float().mean())


def last_prompt_log_prob(editor, tok, prompt, target):
    """Mean log-prob of the target tokens, all read at the last prompt position (FT-L's objective)."""
    _, target_ids = tokenize_pair(tok, prompt, target)
    logits = editor.logits(encode(tok, [prompt]))[0, -1].float()
    return float(torch.log_softmax(logits, -1)[target_ids].mean())


def params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_registered_names_share_one_class():
    editors = editkit.available_editors()
    assert {"none", "ft", "ft-l", "ft-m"} <= set(editors)
    for name, objective in (("ft", "ft-m"), ("ft-m", "ft-m"), ("ft-l", "ft-l")):
        spec = editors[name]
        assert spec.editor_class is FTEditor
        assert spec.make_config().objective == objective
    assert FTEditor.modifies_base_weights is True


def test_default_layer_is_easyedit_layer_scaled_to_depth(build_editor):
    editor = build_editor("ft")
    assert editor.module_path == "model.layers.3.mlp.down_proj"  # round(21 / 32 * 4)
    assert build_editor("ft", layer=1).module_path == "model.layers.1.mlp.down_proj"
    path = "model.layers.0.mlp.up_proj"
    assert build_editor("ft", layer=path).module_path == path  # a dotted path names exactly that module


def test_ft_m_reaches_full_teacher_forced_accuracy(build_editor, tok):
    editor = build_editor("ft-m", lr=1e-2)
    assert tf_accuracy(editor, tok, REQUEST.prompt, REQUEST.target) < 1.0
    stats = editor.edit(REQUEST)
    assert 0 < stats["iterations"] <= 25 and stats["loss"] < 2.0 and stats["seconds"] > 0
    assert tf_accuracy(editor, tok, REQUEST.prompt, REQUEST.target) == 1.0


def test_ft_l_moves_the_last_prompt_position_toward_the_targets(build_editor, tok):
    editor = build_editor("ft-l", lr=1e-2)
    before = last_prompt_log_prob(editor, tok, REQUEST.prompt, REQUEST.target)
    stats = editor.edit(REQUEST)
    after = last_prompt_log_prob(editor, tok, REQUEST.prompt, REQUEST.target)
    assert after > before + 1.0
    assert stats["loss"] == pytest.approx(-after, abs=0.1)  # the loss of the last step, before its update


@pytest.mark.parametrize("name", ["ft-m", "ft-l"])
def test_first_step_loss_is_the_objective_on_the_unedited_model(build_editor, tok, target_log_prob, name):
    editor = build_editor(name, steps=1)
    if name == "ft-m":  # teacher-forced cross-entropy over the target tokens
        expected = -target_log_prob(editor, tok, REQUEST.prompt, REQUEST.target)
    else:  # the bag of target tokens, all from the last prompt position
        expected = -last_prompt_log_prob(editor, tok, REQUEST.prompt, REQUEST.target)
    assert editor.edit(REQUEST)["loss"] == pytest.approx(expected, abs=1e-5)


def test_norm_constraint_bounds_each_edits_change(build_editor):
    """As in EasyEdit, the L∞ bound is against the weight at the start of each edit, not the unedited one."""
    eps = 1e-3
    editor = build_editor("ft", lr=1e-2, norm_constraint=eps)
    original = editor.weight.detach().clone()
    editor.edit(REQUEST)
    after_first = editor.weight.detach().clone()
    editor.edit(EditRequest("b", "Zed plays the", "oboe"))
    for before, after in ((original, after_first), (after_first, editor.weight)):
        assert 0.99 * eps <= (after - before).abs().max().item() <= eps + 1e-6  # + float32 rounding
    assert (editor.weight - original).abs().max().item() > 1.5 * eps
    free = build_editor("ft", lr=1e-2)
    free.edit(REQUEST)
    assert (free.weight - original).abs().max().item() > 10 * eps


@pytest.mark.parametrize("overrides", [{}, {"layer": 1}, {"layer": "model.layers.2.mlp.down_proj"}])
def test_only_the_chosen_weight_changes(build_editor, overrides):
    editor = build_editor("ft-l", **overrides)
    before = params(editor.model)
    editor.edit(REQUEST)
    changed = [name for name, p in editor.model.named_parameters() if not torch.equal(p, before[name])]
    assert changed == [f"{editor.module_path}.weight"]
    assert not any(p.requires_grad for p in editor.model.parameters())


def test_reset_restores_the_weight_exactly_and_counts(build_editor):
    editor = build_editor("ft")
    original = editor.weight.detach().clone()
    editor.edit(REQUEST)
    editor.edit(REQUEST)
    assert editor.state_metadata()["edits"] == 2
    assert not torch.equal(editor.weight, original)
    editor.reset()
    assert torch.equal(editor.weight, original) and editor.state_metadata()["edits"] == 0


def test_state_is_the_edited_weight(build_editor, tmp_path):
    editor = build_editor("ft")
    editor.edit(REQUEST)
    state = editor.state_dict()
    key = f"weight:{editor.module_path}"
    assert list(state) == [key] and torch.equal(state[key], editor.weight)
    editor.save_state(tmp_path)
    restored = build_editor("ft")
    restored.load_state(tmp_path)
    assert torch.equal(restored.weight, editor.weight) and restored.state_metadata()["edits"] == 1
    with pytest.raises(EditkitError, match="layers.1"):  # the state of another layer
        build_editor("ft", layer=1).load_state(tmp_path)
    with pytest.raises(EditkitError, match="unexpected tensors"):
        restored.load_state_dict({key: state[key], "extra": state[key]})
    with pytest.raises(EditkitError, match="float64"):
        restored.load_state_dict({key: state[key].double()})


def test_same_requests_give_bitwise_same_weights(build_editor):
    first, second = build_editor("ft"), build_editor("ft")
    for editor in (first, second):
        editor.edit(REQUEST)
        editor.edit(EditRequest("b", "Zed plays the", "oboe"))
    assert torch.equal(first.weight, second.weight)


@pytest.mark.parametrize("name", ["ft-m", "ft-l"])
def test_upper_block_shortcut_gives_the_full_forwards_loss_and_gradient(build_editor, name):
    editor = build_editor(name)
    editor.edit(REQUEST)  # moves the weight away from its initial value, so the check is not a special case
    problem = editor._problem(EditRequest("b", "Zed plays the", "oboe"))
    hidden = editor._hidden_entering_block(problem)
    assert editor.fast_path.mode == "upper" and hidden is not None
    results = []
    for cached in (hidden, None):
        editor.weight.requires_grad_(True)
        with torch.enable_grad():
            loss = editor._loss(editor._logits(problem, cached), problem.targets)
            (grad,) = torch.autograd.grad(loss, editor.weight)
        editor.weight.requires_grad_(False)
        results.append((loss.detach(), grad))
    (fast_loss, fast_grad), (full_loss, full_grad) = results
    torch.testing.assert_close(fast_loss, full_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast_grad, full_grad, atol=1e-6, rtol=1e-5)
    assert fast_grad.abs().max() > 0


@pytest.mark.parametrize("name", ["ft-m", "ft-l"])
def test_upper_block_shortcut_edits_like_the_full_forward(build_editor, name):
    fast, full = build_editor(name), build_editor(name)
    full.fast_path.mode = "full"  # force the plain forward through every block
    for editor in (fast, full):
        editor.edit(REQUEST)
    assert fast.fast_path.mode == "upper"
    torch.testing.assert_close(fast.weight, full.weight, atol=1e-6, rtol=0)


def test_learned_positions_take_the_shortcut_and_edit_like_the_full_forward(tok):
    """GPT-2 adds learned position embeddings before its blocks: the upper loop runs the model's own decoder
    (the blocks below L stood in for), so the shortcut holds there too and trains the same weight."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=258, n_embd=32, n_layer=3, n_head=4, n_positions=64, bos_token_id=256, eos_token_id=256)
    editors = []
    for forced_full in (False, True):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config).eval()
        editor = editkit.get_editor_spec("ft").build(model, tok, FTConfig(lr=1e-2))
        if forced_full:
            editor.fast_path.mode = "full"
        editors.append(editor)
    fast, full = editors
    assert fast.module_path == "transformer.h.2.mlp.c_proj"  # a Conv1D
    batch = encode(tok, [REQUEST.prompt], [REQUEST.target])
    labels = batch.target_labels()
    nll = lambda: float(torch.nn.functional.cross_entropy(fast.logits(batch)[0], labels[0]))  # noqa: E731
    before = nll()
    stats = [editor.edit(REQUEST) for editor in editors]
    assert [s["loop"] for s in stats] == ["upper", "full"]
    torch.testing.assert_close(fast.weight, full.weight, atol=1e-5, rtol=0)
    assert nll() < before


def test_edit_under_no_grad_and_bf16(tok):
    model, _ = tiny_model_and_tokenizer()
    model = model.to(torch.bfloat16)
    editor = editkit.get_editor_spec("ft").build(model, tok, FTConfig(lr=1e-2))
    with torch.no_grad():
        stats = editor.edit(REQUEST)
    assert editor.weight.dtype == torch.bfloat16
    assert stats["loss"] < 3.0


def test_early_stop(build_editor):
    editor = build_editor("ft", early_stop_loss=100.0)
    original = editor.weight.detach().clone()
    stats = editor.edit(REQUEST)
    assert stats["iterations"] == 0 and torch.equal(editor.weight, original)
    editor = build_editor("ft", lr=5e-2, steps=200, early_stop_loss=0.5)
    stats = editor.edit(REQUEST)
    assert 0 < stats["iterations"] < 200 and stats["loss"] < 0.5
    assert FTConfig().early_stop_loss == 1e-2  # EasyEdit's


@pytest.mark.parametrize(
    "values",
    [{"objective": "xx"}, {"lr": 0}, {"lr": -1.0}, {"steps": 0}, {"norm_constraint": 0.0}, {"weight_decay": -1.0}],
)
def test_bad_config_is_a_config_error(values):
    with pytest.raises(ConfigError):
        FTConfig(**values)


def test_config_overrides_from_strings():
    config = FTConfig().override(lr="1e-3", steps="5")
    assert config.lr == 1e-3 and isinstance(config.lr, float)
    assert config.steps == 5 and isinstance(config.steps, int)
    config = config.override(layer="2", norm_constraint="0.1", objective="ft-l")
    assert (config.layer, config.norm_constraint, config.objective) == (2, 0.1, "ft-l")
    assert FTConfig().override(layer="model.layers.1.mlp.down_proj").layer == "model.layers.1.mlp.down_proj"
    assert FTConfig(layer=2).override(norm_constraint="none").norm_constraint is None
    with pytest.raises(ConfigError, match="objective"):
        config.override(objective="xx")
    with pytest.raises(ConfigError, match="no option"):
        config.override(learning_rate="1")
    with pytest.raises(ConfigError):
        config.override(steps="many")


@pytest.mark.parametrize("overrides", [{"layer": 9}, {"layer": "model.layers.1.mlp.nothing"}])
def test_a_layer_the_model_lacks_is_a_config_error(build_editor, overrides):
    with pytest.raises(ConfigError):
        build_editor("ft", **overrides)


def test_empty_target_is_rejected(build_editor):
    with pytest.raises(EditkitError, match="target"):
        build_editor("ft").edit(EditRequest("e", "Capital of Xo is", ""))


@pytest.mark.slow
def test_ft_edits_the_real_default_model(default_model_cache, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(default_model_cache))
    loaded = load_model()
    tok = loaded.tokenizer
    editor = editkit.get_editor_spec("ft").build(loaded.model, tok)
    prompt = "The capital of France is"
    continuation = lambda: tok.decode(editor.generate(encode(tok, [prompt], padding_side="left"), 2)[0])  # noqa: E731
    assert continuation() == " Paris."
    stats = editor.edit(EditRequest("fr", prompt, "Rome"))
    assert editor.module_path == "model.layers.20.mlp.down_proj" and editor.fast_path.mode == "upper"
    assert stats["loss"] < 0.1 and continuation().startswith(" Rome")
    editor.reset()
    assert continuation() == " Paris."
