"""The lower pass of an edit without recomputing its context prefixes.

An edit's batch is the request plus the same request behind each context prefix. Causal attention means
the prefix tokens' states below the trained module never depend on the request, so they, and their keys
and values in every block up to ``L``, are the same for every edit: they are computed once per model
(:func:`prefix_states`) and an edit's lower pass runs only the request's own tokens, attending to the
cached keys and values (:func:`lower_after_prefixes`). With few training steps (the 8,000-edit scale run
uses 3) the lower pass is about half of an edit, and the prefixes are about half of its tokens.

Whether a row really starts with its prefix's tokens depends on the tokenizer, so every row is checked
token by token and the plain lower pass is used when one does not; the editor also compares the result
with the plain lower pass once before trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .batching import PromptBatch, encode
from .editor import _cache_argument
from .partial import LowerPart, SplitForward, model_cache


@dataclass(frozen=True)
class PrefixStates:
    """Block ``L``'s view of every prefix alone, left-padded to the longest: [P, Pmax, ·] each."""

    ids: tuple[tuple[int, ...], ...]  # each prefix's tokens as they open a prefixed row
    valid: torch.Tensor  # [P, Pmax] bool
    keys: tuple[torch.Tensor, ...]  # per block 0..L: [P, heads, Pmax, head_dim]
    values: tuple[torch.Tensor, ...]
    lower: LowerPart  # module input/output and block output at the prefix positions


def _cache_class() -> Any:
    from transformers import DynamicCache

    return DynamicCache


def prefix_states(split: SplitForward, tokenizer: Any, prefixes: Sequence[str]) -> PrefixStates | None:
    """The prefixes' states through block ``L`` (cached per model, module and prefix set); None when the
    model cannot be driven with a cache this way."""
    key = ("prefix-states", split.module_path, tuple(prefixes), getattr(tokenizer, "name_or_path", ""))
    cache = model_cache(split.model)
    if key not in cache:
        cache[key] = _compute(split, tokenizer, prefixes)
    return cache[key]


def _compute(split: SplitForward, tokenizer: Any, prefixes: Sequence[str]) -> PrefixStates | None:
    if not split.possible or not prefixes:
        return None
    device = next(split.model.parameters()).device
    batch = encode(tokenizer, [f"{p}." for p in prefixes], padding_side="left", device=device)
    valid = batch.attention_mask.bool()
    ids = tuple(tuple(row[mask].tolist()) for row, mask in zip(batch.input_ids, valid))
    kv = _cache_class()()
    try:
        lower = split.lower(
            {
                "input_ids": batch.input_ids,
                "attention_mask": batch.attention_mask,
                "position_ids": batch.position_ids,
                "use_cache": True,
                _cache_argument(split.model): kv,
            }
        )
        layers = list(kv.layers)[: split.block_index + 1]
        keys = tuple(layer.keys.detach() for layer in layers)
        values = tuple(layer.values.detach() for layer in layers)
    except Exception:  # noqa: BLE001 - an architecture whose cache is not a list of key/value layers
        return None
    if len(keys) != split.block_index + 1:
        return None
    return PrefixStates(ids, valid, keys, values, lower)


def lower_after_prefixes(
    split: SplitForward, batch: PromptBatch, states: PrefixStates, row_prefix: Sequence[int | None]
) -> LowerPart | None:
    """:meth:`SplitForward.lower` of a right-padded ``batch`` whose row ``r`` starts with prefix
    ``row_prefix[r]`` (None: no prefix), computing only the tokens after the prefixes. None when a row does
    not start with its prefix's tokens."""
    if batch.padding_side != "right":
        return None
    lengths = batch.attention_mask.sum(dim=1).tolist()
    starts = []
    for row, prefix in enumerate(row_prefix):
        start = 0 if prefix is None else len(states.ids[prefix])
        if prefix is not None and tuple(batch.input_ids[row, :start].tolist()) != states.ids[prefix]:
            return None
        if start >= lengths[row]:
            return None
        starts.append(start)
    rows = len(batch)
    suffix = max(n - s for n, s in zip(lengths, starts))
    device = batch.device
    suffix_ids = torch.zeros((rows, suffix), dtype=torch.long, device=device)
    suffix_valid = torch.zeros((rows, suffix), dtype=torch.bool, device=device)
    for row, (start, length) in enumerate(zip(starts, lengths)):
        suffix_ids[row, : length - start] = batch.input_ids[row, start:length]
        suffix_valid[row, : length - start] = True
    source = torch.tensor([0 if p is None else p for p in row_prefix], device=device)
    has_prefix = torch.tensor([p is not None for p in row_prefix], device=device)
    past_valid = states.valid[source] & has_prefix[:, None]
    kv = _cache_class()()
    for layer, (k, v) in enumerate(zip(states.keys, states.values)):
        kv.update(k[source], v[source], layer)
    offsets = torch.tensor(starts, device=device)[:, None]
    after = split.lower(
        {
            "input_ids": suffix_ids,
            "attention_mask": torch.cat([past_valid, suffix_valid], dim=1).long(),
            "position_ids": offsets + torch.arange(suffix, device=device)[None],
            "use_cache": True,
            _cache_argument(split.model): kv,
        }
    )
    names = ("module_in", "module_out", "block_out", "block_in")
    parts = {}
    for name in names:
        a, b = getattr(after, name), getattr(states.lower, name)
        parts[name] = None if a is None or b is None else _assemble(a, b, row_prefix, starts, lengths, batch)
    return LowerPart(**parts)


def _assemble(
    after: torch.Tensor,
    before: torch.Tensor,
    row_prefix: Sequence[int | None],
    starts: Sequence[int],
    lengths: Sequence[int],
    batch: PromptBatch,
) -> torch.Tensor:
    """[B, T, ·] in the batch's layout: each row's cached (left-padded) prefix states ``before``, then its
    computed states ``after``."""
    out = after.new_zeros((len(batch), batch.input_ids.shape[1], after.shape[-1]))
    for row, (prefix, start, length) in enumerate(zip(row_prefix, starts, lengths)):
        if prefix is not None:
            out[row, :start] = before[prefix, before.shape[1] - start :]
        out[row, start:length] = after[row, : length - start]
    return out
