"""MEMOIR's own properties (docs/design.md, "Methods"; issue 4), on tiny random Llama models.

The conformance suite already runs MEMOIR through the generic Editor contract; these tests pin down what is
specific to it: exact zero contribution when routing says no, k-bit masks, the permutation in the saved
state, batched/KV-cache consistency with many stored edits, and the fast edit loop against the reference one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editkit import EditRequest, encode
from editkit.errors import ConfigError, EditkitError
from editkit.registry import get_editor_spec
from editkit.methods.memoir import MemoirConfig, MemoirEditor
from editkit.methods.memoir.tophash import MaskDatabase, pack, top_k_masks, unpack
from editkit.testing import tiny_model_and_tokenizer

WORDS = ("Xo", "Zed", "Ken", "Mira", "Tove", "Pax", "Ulm", "Ria", "Bex", "Odo")
RELATIONS = ("The capital of {} is", "{} plays the", "{} was born in", "The colour of {} is", "{} works for")
TARGETS = ("Lum", "oboe", "Rio", "teal", "Acme")


def _requests(n: int) -> list[EditRequest]:
    """n distinct requests, each with a rephrase, a locality pair and an irrelevant text."""
    out = []
    for i in range(n):
        word, relation = WORDS[i % len(WORDS)], RELATIONS[(i // len(WORDS)) % len(RELATIONS)]
        out.append(
            EditRequest(
                id=str(i),
                prompt=relation.format(word),
                target=TARGETS[(i * 7) % len(TARGETS)],
                rephrases=(f"Tell me: {relation.format(word)}",),
                locality=((f"Two plus {i} is", "more"),),
                irrelevant=f"Grass number {i} is green",
            )
        )
    return out


PROBES = (
    "The capital of Xo is",
    "Grass is",
    "Tell me: Zed plays the",
    "The sun rises in the east and",
    "Ice is",
    "Mira was born in",
    "What is two plus two",
    "The colour of Pax is",
    "Q",
    "Zed plays the",
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are overhead-bound; on a shared 2-core machine two OpenMP threads only fight."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _editor(**overrides) -> MemoirEditor:
    model, tokenizer = tiny_model_and_tokenizer()
    return get_editor_spec("memoir").build(model, tokenizer, MemoirConfig(**overrides))


def _base():
    model, tokenizer = tiny_model_and_tokenizer()
    return get_editor_spec("none").build(model, tokenizer)


@pytest.fixture(scope="module")
def edited() -> MemoirEditor:
    """50 edits (5 steps each: enough for a non-zero memory) on one editor.

    τ = 0.7: on a 64-channel tiny model with a byte-level tokenizer every prompt overlaps every other by
    0.4-0.67, so the official 0.4 would route everything; 0.7 separates edited prompts (overlap 1) from the rest.
    """
    torch.set_num_threads(1)
    editor = _editor(n_iter=5, tau=0.7)
    for request in _requests(50):
        editor.edit(request)
    return editor


def test_unedited_editor_is_the_base_model():
    editor, base = _editor(), _base()
    tok = editor.tokenizer
    batch = encode(tok, list(PROBES), ["ab"] * len(PROBES))
    assert torch.equal(editor.logits(batch), base.logits(batch))
    left = encode(tok, list(PROBES), padding_side="left")
    assert torch.equal(editor.generate(left, 4), base.generate(left, 4))


def test_rows_below_tau_get_exactly_the_base_logits(edited):
    base = _base()
    prompts = list(PROBES) + [r.prompt for r in _requests(50)[::7]] + [r.rephrases[0] for r in _requests(50)[::9]]
    for side in ("right", "left"):
        batch = encode(edited.tokenizer, prompts, ["xyz"] * len(prompts), padding_side=side)
        logits, reference = edited.logits(batch), base.logits(batch)
        scores = edited.routing_scores(batch)
        active = np.array(scores.scores) >= scores.threshold
        assert active.any() and not active.all(), "the probe set should mix routed and unrouted rows"
        for row in range(len(prompts)):
            if active[row]:
                assert not torch.equal(logits[row], reference[row]), prompts[row]
            else:
                assert torch.equal(logits[row], reference[row]), prompts[row]


def test_routing_scores_are_what_routing_decides(edited):
    """The reported score is the overlap the memory is switched on by, for every row (issue 6): the rows
    scoring at least τ are exactly the rows whose logits leave the base model's."""
    base = _base()
    prompts = list(PROBES) + [r.prompt for r in _requests(50)[::7]]
    for side in ("right", "left"):
        batch = encode(edited.tokenizer, prompts, ["xyz"] * len(prompts), padding_side=side)
        scores = edited.routing_scores(batch)
        assert (scores.threshold, scores.name) == (edited.config.tau, "best mask overlap")
        routed = [not torch.equal(a, b) for a, b in zip(edited.logits(batch), base.logits(batch))]
        assert routed == [s >= scores.threshold for s in scores.scores]


def test_every_mask_has_exactly_k_bits(edited):
    stored = unpack(edited.database.rows(np.arange(len(edited.database))), edited.width)
    assert stored.shape == (len(edited.database), edited.width)
    assert (stored.sum(dim=1) == edited.k).all()
    queries = edited.prompt_masks(list(PROBES))
    assert (queries.sum(dim=1) == edited.k).all()
    assert edited.k == round(edited.width * 4096 / 14336)


def test_memory_uses_the_stored_mask_of_the_best_match(edited):
    request = _requests(50)[3]
    batch = encode(edited.tokenizer, [request.rephrases[0], request.prompt])
    acts = edited.split.module_inputs(batch)
    route = edited._decide(acts, batch.prompt_mask)
    assert route is not None
    rows, masks = route
    best_rows, _, _ = edited._best_overlaps(acts, batch.prompt_mask)
    best = best_rows[rows.cpu().numpy()]
    assert torch.equal(masks.cpu(), unpack(edited.database.rows(best), edited.width))
    assert best_rows[1] == edited.edit_rows[3]  # the edit's own prompt finds its own mask


def test_duplicate_masks_are_stored_once():
    editor = _editor(n_iter=2)
    request = _requests(1)[0]
    first, second = editor.edit(request), editor.edit(request)
    assert not first["duplicate_mask"] and second["duplicate_mask"]
    assert len(editor.database) == 1 and editor.edit_rows == [0, 0]


def test_permutation_and_state_survive_save_and_load(edited, tmp_path):
    edited.save_state(tmp_path)
    restored = _editor(seed=7, tau=0.7, n_iter=5)  # a different seed draws a different permutation...
    assert not torch.equal(restored.permutation, edited.permutation)
    restored.load_state(tmp_path)  # ...which the saved state replaces
    assert torch.equal(restored.permutation, edited.permutation)
    assert torch.equal(restored.database.to_tensor(), edited.database.to_tensor())
    assert restored.database.to_tensor().shape[1] == edited.width // 8
    batch = encode(edited.tokenizer, list(PROBES), ["xyz"] * len(PROBES))
    assert torch.equal(restored.logits(batch), edited.logits(batch))
    left = encode(edited.tokenizer, list(PROBES), padding_side="left")
    assert torch.equal(restored.generate(left, 5), edited.generate(left, 5))


def test_batched_equals_one_by_one(edited):
    prompts = list(PROBES) + [r.rephrases[0] for r in _requests(50)[:20:3]]
    for side in ("right", "left"):
        batch = encode(edited.tokenizer, prompts, ["tgt"] * len(prompts), padding_side=side)
        together = edited.logits(batch)
        scores = edited.routing_scores(batch).scores
        for row, prompt in enumerate(prompts):
            single = encode(edited.tokenizer, [prompt], ["tgt"])
            alone = edited.logits(single)[0]
            assert edited.routing_scores(single).scores[0] == scores[row], prompt
            cols = batch.attention_mask[row].bool()
            torch.testing.assert_close(together[row][cols], alone, atol=1e-5, rtol=0)


def test_kv_cache_generation_equals_full_recomputation(edited):
    prompts = list(PROBES[:6]) + [r.prompt for r in _requests(50)[:6]]
    steps = 6
    together = edited.generate(encode(edited.tokenizer, prompts, padding_side="left"), steps)
    for row, prompt in enumerate(prompts):
        prompt_ids = list(edited.tokenizer(prompt).input_ids)
        generated: list[int] = []
        for _ in range(steps):
            ids = torch.tensor([prompt_ids + generated])
            prompt_mask = torch.zeros_like(ids, dtype=torch.bool)
            prompt_mask[:, : len(prompt_ids)] = True
            from editkit.batching import PromptBatch

            batch = PromptBatch(ids, torch.ones_like(ids), prompt_mask, ~prompt_mask, "right")
            generated.append(int(edited.logits(batch)[0, -1].argmax()))
        assert together[row].tolist() == generated, prompt


@pytest.mark.parametrize("decay,loop", [("all", "packed"), ("masked", "packed"), ("all", "padded")])
def test_fast_edit_matches_the_full_forward_edit(decay, loop):
    fast, full = _editor(decay=decay), _editor(decay=decay, fast_edit=False)
    if loop == "padded":
        fast.fast_path.mode = "padded"  # the fallback for models where packed rows do not reproduce the forward
    for request in _requests(4):
        a, b = fast.edit(request), full.edit(request)
        assert a["loop"] == loop and b["loop"] == "full"
        assert a["iterations"] == b["iterations"]
        assert abs(a["loss"] - b["loss"]) <= 1e-4
    assert fast.reuse_prefix_states is True  # the lower pass reused the prefixes' cached states
    delta = (fast.memory.weight - full.memory.weight).abs().max().item()
    assert delta <= 1e-4, delta
    assert fast.memory.weight.abs().max() > 0.01


def test_lower_pass_after_cached_prefixes_matches_the_plain_lower_pass():
    from editkit.batching import encode
    from editkit.partial import lower_parts_match
    from editkit.prefix_cache import lower_after_prefixes, prefix_states
    from editkit.prefixes import prefixed

    editor = _editor()
    prefixes = editor._ensure_prefixes()
    states = prefix_states(editor.split, editor.tokenizer, prefixes)
    assert states is not None and prefix_states(editor.split, editor.tokenizer, prefixes) is states  # cached
    for request in _requests(3):
        batch = encode(editor.tokenizer, prefixed(request.prompt, prefixes), [request.target] * (len(prefixes) + 1))
        reused = lower_after_prefixes(editor.split, batch, states, [None, *range(len(prefixes))])
        assert reused is not None
        assert lower_parts_match(reused, editor.split.lower(batch), batch.attention_mask.bool())
    # a row that does not start with the prefix it is said to have is refused, not silently misread
    batch = encode(editor.tokenizer, [request.prompt, request.prompt], [request.target] * 2)
    assert lower_after_prefixes(editor.split, batch, states, [None, 0]) is None


def test_masked_decay_leaves_other_columns_alone():
    editor = _editor(decay="masked", n_iter=3, weight_decay=0.1)
    requests = _requests(2)
    editor.edit(requests[0])
    before = editor.memory.weight.detach().clone()
    editor.edit(requests[1])
    mask = editor.prompt_masks([requests[1].prompt])[0]
    after = editor.memory.weight.detach()
    assert torch.equal(after[:, ~mask], before[:, ~mask])
    assert not torch.equal(after[:, mask], before[:, mask])


def test_edits_are_learned_and_reset_forgets_them():
    editor, base = _editor(), _base()
    request = _requests(1)[0]
    batch = encode(editor.tokenizer, [request.prompt], [request.target])
    labels = batch.target_labels()
    before = torch.nn.functional.cross_entropy(base.logits(batch).flatten(0, 1), labels.flatten())
    stats = editor.edit(request)
    after = torch.nn.functional.cross_entropy(editor.logits(batch).flatten(0, 1), labels.flatten())
    assert stats["loss"] < 0.8 * stats["initial_loss"]
    assert after < 0.8 * before  # the random tiny model is hard to edit; the loss must still drop a lot
    editor.reset()
    assert torch.equal(editor.logits(batch), base.logits(batch))
    assert len(editor.database) == 0 and float(editor.memory.weight.detach().abs().max()) == 0.0


def test_prepare_takes_background_prompts_from_the_stream():
    requests = _requests(30)
    editor, builtin = _editor(), _editor()
    editor.prepare([r.irrelevant for r in requests])
    assert editor._background_texts[:2] == tuple(r.irrelevant for r in requests[:2])
    assert not torch.equal(editor._ensure_background(), builtin._ensure_background())


def test_config_options():
    assert MemoirConfig().override(k="8").mask_size(64) == 8
    assert MemoirConfig(k=0.25).mask_size(64) == 16
    assert MemoirConfig().override(layer="2").layer == 2
    editor = _editor(layer="model.layers.1.mlp.down_proj")
    assert editor.module_path == "model.layers.1.mlp.down_proj"
    for bad in ({"aggregation": "max"}, {"decay": "none"}, {"k": 0}, {"k": 2.5}, {"tau": 1.5}, {"n_iter": 0}):
        with pytest.raises(ConfigError):
            MemoirConfig(**bad)
    with pytest.raises(ConfigError):
        _editor(layer="model.layers.9.mlp.down_proj")


@pytest.mark.parametrize("aggregation", ["mean", "last"])
def test_other_aggregations_edit_and_route(aggregation):
    editor = _editor(aggregation=aggregation, n_iter=5)
    request = _requests(1)[0]
    editor.edit(request)
    assert editor.background is None
    assert editor.routing_scores(encode(editor.tokenizer, [request.prompt])).scores[0] == 1.0


def test_loading_a_state_of_another_shape_fails(edited, tmp_path):
    edited.save_state(tmp_path)
    other = _editor(k=5)
    with pytest.raises(EditkitError):
        other.load_state(tmp_path)


# ------------------------------------------------------------------------------------ the mask database
def test_packed_overlaps_match_a_bool_reference(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    width, k = 200, 57  # not a multiple of 64: the last word is partly padding
    permutation = torch.randperm(width, generator=generator)
    masks = top_k_masks(torch.randn(300, width, generator=generator), k, permutation)
    assert torch.equal(unpack(pack(masks), width), masks)
    database = MaskDatabase(width, capacity=1)
    for row in pack(masks[:250]):
        database.add(row)
    database.extend(pack(masks[250:]))
    assert len(database) == 300 and database.bytes_per_mask == 32
    queries = masks[::37] | torch.rand(masks[::37].shape, generator=generator).lt(0.1)
    reference = (queries[:, None, :] & masks[None, :, :]).sum(-1).numpy()
    assert np.array_equal(database.overlaps(pack(queries)), reference)
    # the per-query loop (used for large databases), alone and split over threads, gives the same numbers
    import editkit.methods.memoir.tophash as tophash

    monkeypatch.setattr(tophash, "_BROADCAST_LIMIT", 0)
    assert np.array_equal(database.overlaps(pack(queries)), reference)
    monkeypatch.setattr(tophash, "_THREADED_MIN", 0)
    monkeypatch.setattr(tophash, "_scan_threads", lambda: 3)
    assert np.array_equal(database.overlaps(pack(queries)), reference)
    monkeypatch.undo()
    rows, best = database.best(pack(queries))
    assert np.array_equal(best, reference.max(axis=1)) and np.array_equal(rows, reference.argmax(axis=1))
    restored = MaskDatabase(width)
    restored.load_tensor(database.to_tensor())
    assert np.array_equal(restored.overlaps(pack(queries)), reference)
