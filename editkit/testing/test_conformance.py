"""The conformance suite: every registered editor (built-in or plug-in), under its default config and under
each config variant it declares, must pass every test here.

Each test is parametrised over :func:`editkit.testing.plugin.editor_cases` (``editor_case``), runs on fresh
tiny random Llama models and knows nothing about any particular method: only the ``Editor`` contract
(docs/design.md, "Contracts"). Run it with ``pytest --pyargs editkit.testing``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pytest
import torch

import editkit
from editkit import Editor, EditRequest, encode
from editkit.errors import EditkitError
from editkit.registry import baseline_names, get_editor_spec
from editkit.testing.plugin import EditorCase

GENERATE_TOKENS = 4


def _assert_same(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Bitwise equality, with a short message instead of two printed tensors."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if not torch.equal(actual, expected):
        if actual.is_floating_point():
            detail = f"max abs difference {(actual.float() - expected.float()).abs().max().item():.3g}"
        else:
            detail = f"{int((actual != expected).sum())} of {actual.numel()} entries differ"
        pytest.fail(f"{what}: not bitwise equal ({detail})")


def _apply_all(editor: Editor, requests: Sequence[EditRequest]) -> list[dict[str, Any]]:
    return [editor.edit(request) for request in requests]


def _unedited(model: torch.nn.Module, tokenizer: Any) -> Editor:
    """The registered unedited baseline on ``model`` (the reference every editor with no edits must equal)."""
    return get_editor_spec(baseline_names()[0]).build(model, tokenizer)


# ----------------------------------------------------------------------------- 1. edit() and its stats
def test_edit_returns_stats_for_a_sequence_of_edits(editor_case, edit_requests):
    editor = editor_case.build()
    assert editor.name == editor_case.name
    for stats in _apply_all(editor, edit_requests):
        assert isinstance(stats, dict)
        assert isinstance(stats.get("iterations"), int) and not isinstance(stats["iterations"], bool)
        assert stats["iterations"] >= 0
        assert isinstance(stats.get("seconds"), (int, float)) and stats["seconds"] >= 0
        if stats.get("loss") is not None:
            assert isinstance(stats["loss"], (int, float)) and not math.isnan(stats["loss"])


# ------------------------------------------------------------------------------------ 2. zero edits, reset()
def test_an_editor_with_no_edits_is_the_base_model(editor_case, fresh_model, tok, probe_batch, probe_prompts):
    batch, left = probe_batch(), encode(tok, probe_prompts, padding_side="left")
    model, _ = fresh_model
    with torch.no_grad():
        base = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    editor = editor_case.build()
    _assert_same(editor.logits(batch), base, "logits before any edit")
    unedited = _unedited(*fresh_model)
    _assert_same(editor.generate(left, GENERATE_TOKENS), unedited.generate(left, GENERATE_TOKENS), "generation before any edit")


def test_reset_restores_the_unedited_logits(
    editor_case, fresh_model, tok, edit_requests, probe_batch, probe_prompts
):
    batch, left = probe_batch(), encode(tok, probe_prompts, padding_side="left")
    unedited = _unedited(*fresh_model)

    editor = editor_case.build()
    _apply_all(editor, edit_requests)
    editor.reset()
    _assert_same(editor.logits(batch), unedited.logits(batch), "logits after reset")
    _assert_same(editor.generate(left, GENERATE_TOKENS), unedited.generate(left, GENERATE_TOKENS), "generation after reset")


def test_editing_after_reset_matches_a_fresh_editor(editor_case, edit_requests, probe_batch):
    batch = probe_batch()
    editor = editor_case.build()
    _apply_all(editor, edit_requests)
    editor.reset()
    _apply_all(editor, edit_requests[:2])
    fresh = editor_case.build()
    _apply_all(fresh, edit_requests[:2])
    _assert_same(editor.logits(batch), fresh.logits(batch), "logits of reset-then-edited vs fresh editor")


# -------------------------------------------------------------------------------------- 3. save / load
def test_saved_state_reproduces_logits_exactly(
    editor_case, tok, edit_requests, probe_batch, probe_prompts, tmp_path
):
    batch, left = probe_batch(), encode(tok, probe_prompts, padding_side="left")
    editor = editor_case.build()
    _apply_all(editor, edit_requests)
    editor.save_state(tmp_path / "state")

    # a fresh copy of the same seeded base model, the same config
    restored = editor_case.build()
    restored.load_state(tmp_path / "state")
    _assert_same(restored.logits(batch), editor.logits(batch), "logits after load_state")
    _assert_same(restored.generate(left, GENERATE_TOKENS), editor.generate(left, GENERATE_TOKENS), "generation after load_state")


def test_loading_another_editors_state_fails(editor_case, edit_requests, tmp_path):
    others = [name for name in editkit.available_editors() if name != editor_case.name]
    if not others:
        pytest.skip("only one editor is registered")
    other = EditorCase(others[0]).build()
    _apply_all(other, edit_requests[:1])
    other.save_state(tmp_path / "other")
    editor = editor_case.build()
    with pytest.raises(EditkitError):
        editor.load_state(tmp_path / "other")
    with pytest.raises(EditkitError):
        editor.load_state(tmp_path / "nothing-saved-here")


# ----------------------------------------------------------------------------------- 4. per-row routing
def test_batched_logits_equal_each_row_alone(editor_case, edit_requests, probe_batch):
    editor = editor_case.build()
    _apply_all(editor, edit_requests)
    batch = probe_batch("right")
    logits = editor.logits(batch)
    for row in range(len(batch)):
        length = int(batch.attention_mask[row].sum())
        # the row alone, with no padding at all
        single = editkit.PromptBatch(
            batch.input_ids[row : row + 1, :length],
            batch.attention_mask[row : row + 1, :length],
            batch.prompt_mask[row : row + 1, :length],
            batch.target_mask[row : row + 1, :length],
            "right",
        )
        alone = editor.logits(single)[0]
        torch.testing.assert_close(logits[row, :length], alone, atol=1e-5, rtol=0)


def test_routing_scores_follow_the_contract(editor_case, tok, edit_requests, probe_prompts, probe_batch):
    """None, or one finite score per row with a finite threshold; asking changes nothing and is repeatable."""
    editor = editor_case.build()
    _apply_all(editor, edit_requests)
    prompts = encode(tok, probe_prompts, padding_side="right")
    before = editor.logits(probe_batch("right"))
    first, second = editor.routing_scores(prompts), editor.routing_scores(prompts)
    if first is None:
        assert second is None
        return
    assert isinstance(first, editkit.RoutingScores) and len(first) == len(probe_prompts)
    assert all(math.isfinite(s) for s in first.scores) and math.isfinite(first.threshold) and first.name
    assert first == second
    _assert_same(editor.logits(probe_batch("right")), before, "logits after routing_scores")


def test_generation_keeps_routing_through_the_kv_cache(
    editor_case, tok, edit_requests, probe_prompts, continuation_batch
):
    editor = editor_case.build()
    _apply_all(editor, edit_requests)
    together = editor.generate(encode(tok, probe_prompts, padding_side="left"), GENERATE_TOKENS)
    assert together.shape == (len(probe_prompts), GENERATE_TOKENS)
    for row, prompt in enumerate(probe_prompts):
        alone = editor.generate(encode(tok, [prompt], padding_side="left"), GENERATE_TOKENS)[0]
        assert together[row].tolist() == alone.tolist(), prompt
        # greedy decoding with no cache: full forwards on the growing sequence, the prompt boundary kept
        generated: list[int] = []
        for _ in range(GENERATE_TOKENS):
            logits = editor.logits(continuation_batch(tok, prompt, generated))
            generated.append(int(logits[0, -1].argmax()))
        assert alone.tolist() == generated, prompt


def test_generation_stops_when_every_row_is_complete(editor_case, tok, edit_requests, probe_prompts):
    """``generate(..., stop=)``: decoding ends once ``stop`` says every row is complete, and what it gave
    until then is the full-length decode's prefix (free-generation scoring relies on both)."""
    editor = editor_case.build()
    _apply_all(editor, edit_requests)
    batch = encode(tok, probe_prompts, padding_side="left")
    full = editor.generate(batch, GENERATE_TOKENS)
    seen: list[int] = []

    def after_two(so_far: torch.Tensor) -> torch.Tensor:
        seen.append(so_far.shape[1])
        return torch.full((so_far.shape[0],), so_far.shape[1] >= 2, dtype=torch.bool)

    short = editor.generate(batch, GENERATE_TOKENS, stop=after_two)
    assert seen == [1, 2] and short.tolist() == full[:, :2].tolist()


# ------------------------------------------------------------------------------------- 5. base weights
def test_base_weights_unchanged_unless_declared(editor_case, fresh_model, edit_requests):
    spec = editor_case.spec
    if spec.editor_class.modifies_base_weights:
        pytest.skip(f"{spec.editor_class.__name__} declares modifies_base_weights")
    model, tokenizer = fresh_model
    # held by identity, so an editor that wraps a module (renaming its parameters) is still checked
    before = [(name, t, t.detach().clone()) for name, t in [*model.named_parameters(), *model.named_buffers()]]
    editor = editor_case.build(model, tokenizer)
    _apply_all(editor, edit_requests)
    for name, tensor, copy in before:
        _assert_same(tensor, copy, f"{editor_case.id} changed base tensor {name}")


# -------------------------------------------------------------------------------------- 6. determinism
def test_same_requests_give_bitwise_equal_logits(
    editor_case, tok, edit_requests, probe_batch, probe_prompts
):
    """Same config (and so the same config seed) → same results, whatever the global RNG state: an editor
    draws its randomness from its config, so a run does not depend on what ran before it."""
    batch, left = probe_batch(), encode(tok, probe_prompts, padding_side="left")
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        editor = editor_case.build()
        runs.append((editor, _apply_all(editor, edit_requests)))
    (first, stats_first), (second, stats_second) = runs
    assert [s["iterations"] for s in stats_first] == [s["iterations"] for s in stats_second]
    _assert_same(first.logits(batch), second.logits(batch), "logits of two editors fed the same requests")
    _assert_same(first.generate(left, GENERATE_TOKENS), second.generate(left, GENERATE_TOKENS), "generation of two editors fed the same requests")


# ------------------------------------------------------------------------------- 7. edits do something
def test_edit_makes_the_target_more_likely(editor_case, tok, edit_requests, target_log_prob):
    if editor_case.spec.editor_class.is_baseline:
        pytest.skip("the unedited baseline ignores edits by definition")
    editor = editor_case.build()
    request = edit_requests[0]
    before = target_log_prob(editor, tok, request.prompt, request.target)
    with torch.no_grad():  # callers may hold no_grad; an editor must still be able to train
        editor.edit(request)
    after = target_log_prob(editor, tok, request.prompt, request.target)
    assert after > before, f"{editor_case.id}: mean target log-prob {before:.4f} -> {after:.4f}"

