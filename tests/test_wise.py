"""WISE's own properties on tiny random Llama models: TIES merging, masked and clamped training, shards
and merges, retrieval, exact main-memory passthrough below the routing threshold, and config errors."""

from __future__ import annotations

import pytest
import torch

from editkit import EditRequest, encode
from editkit.errors import ConfigError
from editkit.methods.wise import WiseConfig, WiseEditor
from editkit.methods.wise.merge import ties_merge, trim
from editkit.testing import tiny_model_and_tokenizer

REQUESTS = [
    EditRequest(id=str(i), prompt=p, target=t, rephrases=(), locality=(), irrelevant=irr)
    for i, (p, t, irr) in enumerate(
        [
            ("Capital of Xo is", "Lum", "Ice is cold"),
            ("Zed plays the", "oboe", "Sky colour is blue"),
            ("Ken was born in", "Rio", "Two plus two is four"),
        ]
    )
]


def _editor(**overrides) -> WiseEditor:
    model, tok = tiny_model_and_tokenizer()
    return WiseEditor(model, tok, WiseConfig(**overrides))


def test_trim_keeps_the_largest_entries():
    delta = torch.tensor([[0.1, -3.0], [2.0, -0.2]])
    assert trim(delta, 0.5).tolist() == [[0.0, -3.0], [2.0, 0.0]]


def test_ties_merge_elects_a_sign_and_averages_only_agreeing_shards():
    a = torch.tensor([1.0, -2.0, 3.0, 0.0])
    b = torch.tensor([3.0, 1.0, -1.0, 4.0])
    merged = ties_merge([a, b], density=1.0)
    # entry 0: both +, mean 2; entry 1: sum -1 → "-", only a agrees: -2; entry 2: sum 2 → "+", only a: 3;
    # entry 3: only b is non-zero: 4
    assert merged.tolist() == [2.0, -2.0, 3.0, 4.0]


def test_training_writes_only_the_shard_mask_and_respects_the_norm_constraint():
    editor = _editor(norm_constraint=0.05, n_iter=10)
    editor.edit(REQUESTS[0])
    mask = editor._gradient_mask()
    assert bool((editor.current[~mask] == 0).all())
    assert bool((editor.current[mask] != 0).any())
    assert float((editor.base + editor.current).abs().max()) <= 0.05 + 1e-7


def test_shards_are_merged_every_merge_period():
    editor = _editor(shard_size=1, merge_every=2, n_iter=3)
    masks = []
    for request in REQUESTS:
        masks.append(editor._gradient_mask().clone())
        editor.edit(request)
    assert not torch.equal(masks[0], masks[1])  # a new mask per shard
    # after edits 1 and 2 (two shards) a merge; edit 3 is a finished shard waiting for the next merge
    assert len(editor.shards) == 1 and bool(editor.base.abs().sum() > 0)
    assert len(editor.side_memories()) == 1


def test_retrieve_keeps_one_side_memory_per_shard():
    editor = _editor(shard_size=1, retrieve=True, n_iter=3)
    for request in REQUESTS:
        editor.edit(request)
    assert len(editor.side_memories()) == 3 and len(editor.min_gaps) == 3
    tok = editor.tokenizer
    batch = encode(tok, [r.prompt for r in REQUESTS], [r.target for r in REQUESTS])
    choice, _, _ = editor._gaps(*editor.split.module_io(batch), batch.prompt_mask)
    assert choice.shape == (3,) and set(choice.tolist()) <= {0, 1, 2}  # one of the three memories per row


def test_rows_below_the_threshold_get_the_base_logits_exactly():
    editor = _editor()
    model, tok = tiny_model_and_tokenizer()
    editor.edit(REQUESTS[0])
    prompts = [REQUESTS[0].prompt, "Grass is", "The sun rises in the east and", REQUESTS[2].prompt]
    batch = encode(tok, prompts, ["Lum", "x", "y", "Rio"])
    logits = editor.logits(batch)
    with torch.no_grad():
        base = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    scores = editor.routing_scores(batch)
    active = [score >= scores.threshold for score in scores.scores]
    assert active[0] and not all(active), scores  # the edit's own prompt is at the minimum gap
    for row, on in enumerate(active):
        assert torch.equal(logits[row], base[row]) != on, f"row {row}: side memory {on}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mask_ratio": 0}, "mask_ratio"),
        ({"merge_density": 1.5}, "merge_density"),
        ({"shard_size": 3, "merge_every": 4}, "multiple"),
        ({"n_iter": 0}, "n_iter"),
        ({"num_prefixes": 11}, "num_prefixes"),
        ({"act_ratio": -1}, "act_ratio"),
    ],
)
def test_bad_config_values_are_rejected_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        WiseConfig(**overrides)
