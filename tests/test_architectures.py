"""The architecture matrix: layer discovery, the split forward and the prefix cache against each family's own
forward, and the module-semantics helpers (activation, flattened tokens, in-place outputs).

Every check compares with the model's full forward in float32 at a tight tolerance, on a tiny random model
of each family (:mod:`editkit.architectures`), with a random change added at the FFN output the way a
memory editor adds its own (so the place where an edit joins the residual stream is tested too).
"""

from __future__ import annotations

import pytest
import torch

from editkit.architectures import ARCHITECTURES, SINGLE, build_architecture, split_forward_differences
from editkit.batching import encode
from editkit.checks import layer_module_path
from editkit.errors import ConfigError
from editkit.layers import (
    TokenShape,
    block_list_path,
    capture,
    down_proj_path,
    ffn_activation,
    like_module_tensor,
    resolve_module,
    tokens_3d,
)
from editkit.partial import SplitForward, mismatch
from editkit.testing import tiny_tokenizer

EDITABLE = [name for name in ARCHITECTURES if ARCHITECTURES[name].kind != "moe"]
TOLERANCE = 1e-4
LAYER = 1  # of 4: blocks below and above the edited one
PROMPTS = ["The capital of France is", "Who wrote Hamlet? The author", "Q: colour of the sky? A:"]
TARGETS = [" Paris", " William Shakespeare", " blue"]


def _delta(shape: torch.Size, valid: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(shape, generator=generator) * 0.5 * valid[..., None]


def _forward_with_hook(model, module: torch.nn.Module, hook, batch) -> torch.Tensor:
    """The model's own logits [B, T, V] with a forward hook on ``module``."""
    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False
            ).logits
    finally:
        handle.remove()


def _full_logits(model, split: SplitForward, batch, delta: torch.Tensor, rows, cols) -> torch.Tensor:
    return _forward_with_hook(model, split.module, lambda _m, _a, out: out + like_module_tensor(delta, out), batch)[rows, cols]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


_MODELS: dict[str, torch.nn.Module] = {}


def model_of(name: str, tokenizer) -> torch.nn.Module:
    if name not in _MODELS:
        _MODELS[name] = build_architecture(name, tokenizer)
    return _MODELS[name]


@pytest.mark.parametrize("name", EDITABLE)
def test_split_forward_reproduces_the_full_forward(name, tokenizer):
    diffs = split_forward_differences(model_of(name, tokenizer), tokenizer, LAYER)
    assert diffs["padded"] < TOLERANCE, diffs
    assert diffs["packed"] < TOLERANCE, diffs
    assert diffs["prefix"] < TOLERANCE, diffs


@pytest.mark.parametrize("name", EDITABLE)
def test_the_old_shortcut_matches_where_the_block_passes_the_change_through(name, tokenizer):
    """``upper_logits(block_out + delta)`` (what the methods call today) is right exactly where the FFN
    output reaches the residual stream unchanged; where it does not (Gemma's post-FFN norm) the split
    forward says so, so the editor takes :meth:`edited_logits`' route."""
    model = model_of(name, tokenizer)
    split = SplitForward(model, down_proj_path(model, LAYER))
    batch = encode(tokenizer, PROMPTS, TARGETS)
    rows, cols = torch.nonzero(batch.target_labels() != -100, as_tuple=True)
    with torch.no_grad():
        lower = split.lower(batch)
        delta = _delta(lower.module_out.shape, batch.attention_mask.bool())
        full = _full_logits(model, split, batch, delta, rows, cols)
        short = split.upper_logits(lower.block_out + delta, batch.attention_mask, batch.position_ids, rows, cols)
    assert (mismatch(short, full) is None) == split.output_is_additive(batch)
    assert split.output_is_additive(batch) == (name not in {"gemma2", "gemma3", "gemma3_multimodal"})


def test_split_forward_from_the_first_block(tokenizer):
    """An editor training a weight of block 0 starts the upper run at block 0 itself."""
    model = model_of("gpt2", tokenizer)
    split = SplitForward(model, down_proj_path(model, 0))
    batch = encode(tokenizer, PROMPTS, TARGETS)
    rows, cols = torch.nonzero(batch.target_labels() != -100, as_tuple=True)
    with torch.no_grad():
        lower = split.lower(batch)
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
        short = split.upper_logits(lower.block_in, batch.attention_mask, batch.position_ids, rows, cols, start=0)
    assert mismatch(short, full[rows, cols]) is None


@pytest.mark.parametrize("name", EDITABLE)
def test_layer_discovery(name, tokenizer):
    model = model_of(name, tokenizer)
    blocks = block_list_path(model)
    assert len(resolve_module(model, blocks)) == 4
    path = layer_module_path(model, None, (27, 32))
    assert path.startswith(f"{blocks}.3.")
    assert ("language_model" in blocks) == (ARCHITECTURES[name].kind == "multimodal")


def test_moe_ffn_is_refused_in_one_line(tokenizer):
    model = model_of("mixtral", tokenizer)
    with pytest.raises(ConfigError) as info:
        layer_module_path(model, None, (27, 32))
    message = str(info.value)
    assert "\n" not in message and "mixture of experts" in message and "layer" in message
    assert "model.layers.3.mlp" in message


def test_unknown_layout_names_what_was_looked_for():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ConfigError, match="looked for model.layers.*layer"):
        block_list_path(model)


def test_a_module_outside_the_blocks_says_why_not_fast(tokenizer):
    model = model_of("llama", tokenizer)
    split = SplitForward(model, "lm_head")
    assert not split.possible and "not inside the decoder block list model.layers" in split.reason


# the activation each family's FFN really applies (config.hidden_act is absent or a default on most)
_ACTIVATIONS = {
    "gpt2": "NewGELUActivation", "gptj": "NewGELUActivation", "gpt_neox": "GELUActivation",
    "llama": "SiLUActivation", "mistral": "SiLUActivation", "qwen2": "SiLUActivation", "qwen3": "SiLUActivation",
    "phi3": "SiLUActivation", "gemma2": "GELUTanh", "gemma3": "GELUTanh", "gemma3_multimodal": "GELUTanh",
    "opt": "ReLU", "falcon": "GELUActivation", "bloom": "BloomGelu",
}  # fmt: skip


@pytest.mark.parametrize("name", EDITABLE)
def test_ffn_activation_is_the_modules_own(name, tokenizer):
    model = model_of(name, tokenizer)
    path = down_proj_path(model, LAYER)
    act = ffn_activation(model, path)
    assert type(act).__name__ == _ACTIVATIONS[name]
    x = torch.linspace(-3, 3, 13)
    assert not torch.allclose(act(x), x)  # never the identity


def test_tokens_3d_and_token_shape_on_flattened_ffn_inputs(tokenizer):
    """OPT's FFN sees [B·T, D]; a hook views it as [B, T, D] and returns the module's layout."""
    model = model_of("opt", tokenizer)
    path = down_proj_path(model, LAYER)
    module = resolve_module(model, path)
    batch = encode(tokenizer, PROMPTS, TARGETS)
    seen: dict[str, torch.Size] = {}
    with TokenShape(model, path) as shape:

        def hook(_m, args, out):
            seen["raw"] = args[0].shape
            seen["view"] = shape.view(args[0]).shape
            return like_module_tensor(shape.view(out) * 1.0, out)

        _forward_with_hook(model, module, hook, batch)
    b, t = batch.input_ids.shape
    assert seen["raw"][0] == b * t and seen["view"][:2] == (b, t)
    assert tokens_3d(torch.zeros(b * t, 3), (b, t)).shape == (b, t, 3)
    with pytest.raises(ValueError):
        tokens_3d(torch.zeros(5, 3), (b, t))


def test_capture_survives_an_in_place_add_after_the_module(tokenizer):
    """Falcon adds the attention output into the FFN output in place; a plain detach() would follow."""
    model = model_of("falcon", tokenizer)
    module = resolve_module(model, down_proj_path(model, LAYER))
    batch = encode(tokenizer, PROMPTS, TARGETS)
    kept: dict[str, torch.Tensor] = {}

    def hook(_m, _a, out):
        kept["alias"], kept["copy"], kept["value"] = out.detach(), capture(out), out.detach().clone()

    _forward_with_hook(model, module, hook, batch)
    assert torch.equal(kept["copy"], kept["value"])
    assert not torch.equal(kept["alias"], kept["value"])  # the aliasing this guards against is real here


def test_matrix_lists_every_family():
    assert set(SINGLE) == {
        "gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "opt", "falcon", "bloom",
    }  # fmt: skip
    assert {a.kind for a in ARCHITECTURES.values()} == {"single", "multimodal", "moe"}
