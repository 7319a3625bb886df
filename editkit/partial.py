"""A decoder run in two parts around the block that holds an editor's trainable tensor.

Memory-style editors (MEMOIR's residual memory, GRACE's codebook, WISE's side memory) train something that
sits at the output of one FFN down-projection in block ``L``. Nothing below that point changes while an edit
trains, so the inputs of the down-projection, its output and the output of block ``L`` are computed once per
edit (:meth:`SplitForward.lower`), and each training step only adds the editor's change to block ``L``'s
output and runs the blocks above it, with the LM head evaluated only where the loss reads
(:meth:`SplitForward.upper_logits`). On a 135M model with a 49K vocabulary the head alone costs as much as
several blocks, so both halves of the saving matter.

Whether the shortcut reproduces the model's own forward depends on the architecture (a model that adds
position embeddings or rescales ``inputs_embeds`` breaks it), so editors compare it once against the full
forward (:func:`logits_match`) and fall back to the full forward when it does not match.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .batching import PromptBatch
from .editor import _forward_params
from .errors import ConfigError, EditkitError
from .layers import block_list_path, linear_weight_in_out, resolve_module

# Per model object (weakly held, so a dropped model frees its entries): values that depend only on the base
# weights (context prefixes, background means) and are the same for every editor built on the model.
_MODEL_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, Any]]" = weakref.WeakKeyDictionary()


def model_cache(model: torch.nn.Module) -> dict[tuple, Any]:
    """A dictionary that lives as long as ``model`` does."""
    return _MODEL_CACHE.setdefault(model, {})


class _Stop(Exception):
    """Raised by a hook once what a partial forward came for is captured."""


def enclosing_block(model: torch.nn.Module, module_path: str) -> tuple[str, int | None]:
    """The block list's path and the index of the block that holds ``module_path`` (None if none does)."""
    try:
        blocks = block_list_path(model)
    except ConfigError:
        return "", None
    prefix = blocks + "."
    if not module_path.startswith(prefix):
        return blocks, None
    head = module_path[len(prefix) :].split(".", 1)[0]
    return blocks, int(head) if head.isdigit() else None


@contextmanager
def blocks_from(model: torch.nn.Module, blocks_path: str, start: int) -> Iterator[None]:
    """Temporarily make the model's block list hold only blocks ``start`` and above."""
    parent_path, _, attr = blocks_path.rpartition(".")
    parent = resolve_module(model, parent_path) if parent_path else model
    blocks = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList(list(blocks)[start:]))
    try:
        yield
    finally:
        setattr(parent, attr, blocks)


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """No base parameter requires grad inside the block (so a backward pass through the blocks above an
    edit computes no weight gradients); the flags are restored after, because a model is shared by every
    editor of a comparison and one of them (fine-tuning) trains a base weight."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def forward_until_stop(model: torch.nn.Module, batch: PromptBatch | dict[str, Any], hooks: list[Any]) -> None:
    """A no-grad forward (of a batch, or of explicit forward arguments) that the hooks cut short (by
    raising ``_Stop``) once they hold what they need."""
    if isinstance(batch, PromptBatch):
        batch = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "position_ids": batch.position_ids,
            "use_cache": False,
        }
    try:
        with torch.no_grad():
            model(**batch)
    except _Stop:
        pass
    finally:
        for hook in hooks:
            hook.remove()


@dataclass(frozen=True)
class LowerPart:
    """What block ``L`` computed with no edit applied, [B, T, ·] each."""

    module_in: torch.Tensor  # input of the wrapped module (the down-projection's ``a``)
    module_out: torch.Tensor  # its output
    block_out: torch.Tensor  # block L's output (the residual stream after block L)


class SplitForward:
    """The two halves of a forward pass around the block holding ``module_path``."""

    def __init__(self, model: torch.nn.Module, module_path: str):
        self.model = model
        self.module_path = module_path
        self.module = resolve_module(model, module_path)
        weight, stored_in_out = linear_weight_in_out(self.module)
        #: the wrapped module's widths (its input is where keys, masks and gaps are read)
        self.out_features, self.in_features = (int(n) for n in (weight.shape[::-1] if stored_in_out else weight.shape))
        self.blocks_path, self.block_index = enclosing_block(model, module_path)
        #: False when the model cannot be driven this way at all (the editor then uses the full forward)
        self.possible = (
            self.block_index is not None
            and "inputs_embeds" in _forward_params(type(model))
            and callable(getattr(model, "get_decoder", None))
            and callable(getattr(model, "get_output_embeddings", None))
        )

    def module_io(self, batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Input [B, T, D] and output [B, T, H] of the wrapped module (nothing applied), stopping the
        forward right there; works on any model, split or not."""
        captured: dict[str, torch.Tensor] = {}

        def grab(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            captured["in"], captured["out"] = args[0].detach(), output.detach()
            raise _Stop

        forward_until_stop(self.model, batch, [self.module.register_forward_hook(grab)])
        if "in" not in captured:
            raise EditkitError(f"{self.module_path} was not called in the forward pass")
        return captured["in"], captured["out"]

    def module_inputs(self, batch: PromptBatch) -> torch.Tensor:
        """[B, T, D] input of the wrapped module (nothing applied)."""
        return self.module_io(batch)[0]

    def lower(self, batch: PromptBatch | dict[str, Any]) -> LowerPart:
        """Block ``L``'s view of ``batch`` with nothing applied; computed once per edit. ``batch`` may also be
        the model's forward arguments (a cache of earlier tokens among them)."""
        captured: dict[str, torch.Tensor] = {}
        block = resolve_module(self.model, f"{self.blocks_path}.{self.block_index}")

        def grab_module(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            captured["in"], captured["out"] = args[0].detach(), output.detach()

        def grab_block(_module: torch.nn.Module, _args: tuple, output: Any) -> None:
            captured["block"] = (output[0] if isinstance(output, tuple) else output).detach()
            raise _Stop

        hooks = [self.module.register_forward_hook(grab_module), block.register_forward_hook(grab_block)]
        forward_until_stop(self.model, batch, hooks)
        return LowerPart(captured["in"], captured["out"], captured["block"])

    def upper_logits(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        """[K, V] logits at (rows, cols), running only the blocks above ``L`` on block ``L``'s output."""
        assert self.block_index is not None
        with blocks_from(self.model, self.blocks_path, self.block_index + 1):
            out = self.model.get_decoder()(
                inputs_embeds=hidden, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
        final = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return self.model.get_output_embeddings()(final[rows, cols])


@dataclass(frozen=True)
class PackedRows:
    """The real tokens of a right-padded batch laid end to end in one row, with no padding.

    Positions restart at every original row, and transformers then masks attention block-diagonally, so
    each original row sees exactly what it saw in the padded batch; the padding's share of every training
    step is saved. ``index`` maps [B, T] positions of real tokens to their column in the packed row.
    """

    valid: torch.Tensor  # [B, T] bool, the real tokens
    index: torch.Tensor  # [B, T] long, packed column of each real token
    position_ids: torch.Tensor  # [1, N]

    @classmethod
    def of(cls, batch: PromptBatch) -> "PackedRows":
        valid = batch.attention_mask.bool()
        index = valid.flatten().long().cumsum(0).view_as(valid) - 1
        return cls(valid, index, batch.position_ids[valid][None])

    def pack(self, per_token: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] → [1, N, ...]."""
        return per_token[self.valid][None]


def logits_match(short: torch.Tensor, full: torch.Tensor) -> bool:
    """Whether a shortcut's logits are the full forward's, up to the rounding of a reordered computation."""
    if short.shape != full.shape:
        return False
    tolerance = 1e-3 if full.dtype == torch.float32 else 3e-2
    short, full = short.float(), full.float()
    scale = max(1.0, float(full.abs().max()))
    return bool(((short - full).abs() <= tolerance * scale).all())


def lower_parts_match(short: LowerPart, full: LowerPart, valid: torch.Tensor) -> bool:
    """Whether two lower passes agree at the real tokens (``valid`` [B, T]), up to rounding."""
    pairs = zip((short.module_in, short.module_out, short.block_out), (full.module_in, full.module_out, full.block_out))
    return all(a.shape == b.shape and logits_match(a[valid], b[valid]) for a, b in pairs)


def block_input(model: torch.nn.Module, blocks_path: str, index: int, forward: dict[str, Any]) -> torch.Tensor | None:
    """The hidden states entering block ``index`` for the forward arguments ``forward``, the forward
    stopped right there (None when the block was not reached or gets no tensor)."""
    captured: list[torch.Tensor] = []

    def grab(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor):
            captured.append(hidden.detach())
        raise _Stop

    block = resolve_module(model, f"{blocks_path}.{index}")
    forward_until_stop(model, forward, [block.register_forward_pre_hook(grab, with_kwargs=True)])
    return captured[0] if captured else None
