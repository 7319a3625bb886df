"""Where a locate-then-edit method reads and writes: the subject's last token, in a few contexts.

ROME/MEMIT/AlphaEdit key an edit by the hidden state at the *last token of the subject* inside the prompt,
averaged over the prompt preceded by a few short generic prefixes the model writes itself ("context
templates"), so the key does not depend on the exact text before the subject.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .corpus import sample_texts

#: openings the context prefixes are generated from (ROME's own)
TEMPLATE_OPENINGS = ("The", "Therefore", "Because", "I", "You")


def subject_last_index(tokenizer: Any, text: str, subject: str) -> int:
    """Token index of the subject's last token in ``text`` (its last occurrence), found as ROME does: the
    length of the tokenised text up to the end of the subject, minus one."""
    end = text.rindex(subject) + len(subject)
    return len(tokenizer(text[:end]).input_ids) - 1


def context_templates(model: torch.nn.Module, tokenizer: Any, length_params: Sequence[Sequence[int]], seed: int) -> list[list[str]]:
    """Groups of templates (``"{}"`` alone first, then one group per ``[tokens, count]``): each is a short
    text the model samples from a generic opening, then ``". {}"``. Averages are taken within a group, then
    over groups, as in ROME."""
    groups: list[list[str]] = [["{}"]]
    for tokens, count in length_params:
        openings = [TEMPLATE_OPENINGS[i % len(TEMPLATE_OPENINGS)] for i in range(count)]
        texts = sample_texts(model, tokenizer, openings, tokens, seed, top_k=5)
        decoded = [tokenizer.decode(t, skip_special_tokens=True) for t in texts]
        groups.append([d.replace("{", " ").replace("}", " ").strip() + ". {}" for d in decoded])
    return groups
