"""Context prefixes: the model's own greedy continuations of short seeds, prepended to an edit's prompt.

MEMOIR and WISE train each edit on the request plus copies of it behind such prefixes, so that the edit
still holds when the prompt comes after some other text. The prefixes depend only on the base model, so
they are generated once per model and shared by every editor built on it.
"""

from __future__ import annotations

from typing import Any

import torch

from .editor import _cache_kwargs
from .partial import model_cache

#: seeds of the context prefixes and their continuation lengths in tokens (WISE/MEMOIR's templates)
PREFIX_SEEDS = ("I", "You", "Because", "Yes", "Q: ")
PREFIX_LENGTHS = (5, 10)
MAX_PREFIXES = len(PREFIX_SEEDS) * len(PREFIX_LENGTHS)


def context_prefixes(model: torch.nn.Module, tokenizer: Any) -> list[str]:
    """All ``MAX_PREFIXES`` prefixes, the short ones first (cached per model and tokenizer)."""
    key = ("prefixes", getattr(tokenizer, "name_or_path", ""), len(tokenizer))
    cache = model_cache(model)
    if key not in cache:
        cache[key] = _generate(model, tokenizer)
    return list(cache[key])


def prefixed(prompt: str, prefixes: list[str]) -> list[str]:
    """The prompt alone, then behind each prefix (the batch of one edit, before any negative row)."""
    return [prompt] + [f"{prefix}. {prompt}" for prefix in prefixes]


@torch.no_grad()
def _generate(model: torch.nn.Module, tokenizer: Any) -> list[str]:
    device = next(model.parameters()).device
    longest = max(PREFIX_LENGTHS)
    continuations = []
    for seed in PREFIX_SEEDS:
        ids = torch.tensor([list(tokenizer(seed).input_ids)], device=device)
        out = model(input_ids=ids, use_cache=True)
        generated: list[int] = []
        while True:
            token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            generated.append(int(token))
            if len(generated) == longest:
                break
            out = model(input_ids=token, use_cache=True, **_cache_kwargs(model, out))
        continuations.append((ids[0].tolist(), generated))
    prefixes = []
    for length in PREFIX_LENGTHS:
        for seed_ids, generated in continuations:
            text = tokenizer.decode(seed_ids + generated[:length], skip_special_tokens=True)
            prefixes.append(" ".join(text.split()))  # one line: newlines would split the template
    return prefixes
