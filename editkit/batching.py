"""Tokenised batches that remember, per row, which tokens are the prompt and which are the target.

Routing editors (MEMOIR masks, GRACE keys, WISE routes) decide from the prompt part of each row, and the
teacher-forced scorer and most edit losses read the target part, so both boundaries travel with the batch
instead of being re-derived (differently) by every method.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Sequence

import torch

PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class PromptBatch:
    """``input_ids``/``attention_mask``: [B, T]. ``prompt_mask``/``target_mask``: [B, T] bool.

    ``target_mask`` marks the positions that hold target tokens; the logits that predict them sit one
    position to the left (see :meth:`prediction_mask`).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_mask: torch.Tensor
    target_mask: torch.Tensor
    padding_side: PaddingSide

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def to(self, device: torch.device | str) -> "PromptBatch":
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            prompt_mask=self.prompt_mask.to(device),
            target_mask=self.target_mask.to(device),
        )

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions that ignore padding, so left- and right-padded rows see the same positions."""
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def prediction_mask(self) -> torch.Tensor:
        """[B, T] bool: positions whose next-token logits predict a target token."""
        shifted = torch.zeros_like(self.target_mask)
        shifted[:, :-1] = self.target_mask[:, 1:]
        return shifted

    def target_labels(self) -> torch.Tensor:
        """[B, T] labels aligned with the logits: the next token where it is a target, else -100."""
        labels = torch.full_like(self.input_ids, -100)
        labels[:, :-1] = torch.where(self.target_mask[:, 1:], self.input_ids[:, 1:], -100)
        return labels

    def rows(self, index: Sequence[int] | torch.Tensor) -> "PromptBatch":
        """A sub-batch of the given rows (padding columns are kept)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.device)
        return replace(
            self,
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            prompt_mask=self.prompt_mask[idx],
            target_mask=self.target_mask[idx],
        )


def separator(prompt: str) -> str:
    """What goes between a prompt and its target: a space, except after a prompt that ends a line (a chat
    template's assistant header), where the answer starts the new line as the model would write it."""
    return "" if prompt.endswith("\n") else " "


def tokenize_pair(tokenizer, prompt: str, target: str | None) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` and of the target as it continues ``prompt + " " + target``.

    The pair is tokenised as one string, as EasyEdit does, so the target tokens are the ones the model
    really sees after the prompt; if the tokenizer merges across the boundary, fall back to tokenising the
    target on its own.
    """
    prompt_ids = list(tokenizer(prompt).input_ids)
    if not target:
        return prompt_ids, []
    gap = separator(prompt)
    full = list(tokenizer(f"{prompt}{gap}{target.strip()}").input_ids)
    if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        target_ids = full[len(prompt_ids) :]
    else:
        target_ids = list(tokenizer(gap + target.strip(), add_special_tokens=False).input_ids)
    eos = getattr(tokenizer, "eos_token_id", None)
    if len(target_ids) > 1 and eos is not None and target_ids[-1] == eos:
        target_ids = target_ids[:-1]  # tokenizers that append EOS to every text
    return prompt_ids, target_ids


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def encode(
    tokenizer,
    prompts: Sequence[str],
    targets: Sequence[str | None] | None = None,
    padding_side: PaddingSide = "right",
    device: torch.device | str | None = None,
) -> PromptBatch:
    """Tokenise prompts (optionally followed by their targets) into a padded :class:`PromptBatch`."""
    if targets is None:
        targets = [None] * len(prompts)
    if len(targets) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    pairs = [tokenize_pair(tokenizer, p, t) for p, t in zip(prompts, targets)]
    width = max(len(p) + len(t) for p, t in pairs)
    n = len(pairs)
    input_ids = torch.full((n, width), pad_id(tokenizer), dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    prompt_mask = torch.zeros((n, width), dtype=torch.bool)
    target_mask = torch.zeros((n, width), dtype=torch.bool)
    for row, (p_ids, t_ids) in enumerate(pairs):
        length = len(p_ids) + len(t_ids)
        start = width - length if padding_side == "left" else 0
        input_ids[row, start : start + length] = torch.tensor(p_ids + t_ids, dtype=torch.long)
        attention[row, start : start + length] = 1
        prompt_mask[row, start : start + len(p_ids)] = True
        target_mask[row, start + len(p_ids) : start + length] = True
    batch = PromptBatch(input_ids, attention, prompt_mask, target_mask, padding_side)
    return batch.to(device) if device is not None else batch


# ------------------------------------------------------------------------------------- chat templates
def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer, prompt: str) -> str:
    """``prompt`` as the model's chat template presents a user turn, ending with the assistant's header
    (EasyEdit's ``use_chat_template``: one user message, ``add_generation_prompt=True``).

    The template's text is tokenised like any prompt, so a template that writes the BOS token itself
    loses it here when the tokenizer adds one anyway: a prompt must not start with two.
    """
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if bos and text.startswith(bos) and bos_id is not None and list(tokenizer("").input_ids)[:1] == [bos_id]:
        text = text[len(bos) :]
    return text
