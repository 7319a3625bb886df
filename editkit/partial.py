"""A decoder run in two parts around the block that holds an editor's trainable tensor.

Memory-style editors (MEMOIR's residual memory, GRACE's codebook, WISE's side memory) train something that
sits at the output of one FFN down-projection in block ``L``. Nothing below that point changes while an edit
trains, so the inputs of the down-projection, its output and the output of block ``L`` are computed once per
edit (:meth:`SplitForward.lower`), and each training step only adds the editor's change to block ``L``'s
output and runs the blocks above it, with the LM head evaluated only where the loss reads
(:meth:`SplitForward.upper_logits`). On a 135M model with a 49K vocabulary the head alone costs as much as
several blocks, so both halves of the saving matter.

The upper half runs the model's own decoder forward with blocks ``0..L`` swapped for stand-ins (block ``L``'s
stand-in returns the given hidden states, the ones below pass theirs through), rather than feeding the hidden
states in as ``inputs_embeds`` to a shortened block list. Everything the decoder does before its blocks
(learned position embeddings, embedding scales and norms, ALiBi and rotary tables, per-layer attention
types looked up by block index) is then done exactly as in the full forward and simply overwritten at
block ``L``. Packed rows (several rows laid end to end in one, positions restarting per row) get a
block-diagonal attention mask at every upper block, also on families whose mask ignores ``position_ids``
(OPT, Bloom). The head applies the family's logit post-processing (Gemma's final soft-capping).

Editors still compare the shortcut once against the full forward (:func:`logits_match`); when a model cannot
be driven this way at all, :attr:`SplitForward.reason` says why in one line, for the editor to announce.
"""

from __future__ import annotations

import inspect
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .batching import PromptBatch
from .editor import _forward_params
from .errors import ConfigError, EditkitError
from .layers import block_list_path, capture, like_module_tensor, linear_weight_in_out, resolve_module, tokens_3d

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
    """What block ``L`` computed with no edit applied, [B, T, ·] each (also where the module itself sees
    flattened [B·T, ·] tokens, as OPT's FFN does)."""

    module_in: torch.Tensor  # input of the wrapped module (the down-projection's ``a``)
    module_out: torch.Tensor  # its output
    block_out: torch.Tensor  # block L's output (the residual stream after block L)
    block_in: torch.Tensor | None = None  # block L's input (None where not captured, e.g. after a prefix cache)


def _token_shape(batch: PromptBatch | dict[str, Any]) -> tuple[int, int]:
    ids = batch.input_ids if isinstance(batch, PromptBatch) else batch["input_ids"]
    return int(ids.shape[0]), int(ids.shape[1])


class _PassThrough(torch.nn.Module):
    """Stands in for a block below ``L``: its hidden states are overwritten at ``L`` anyway."""

    def __init__(self, as_tuple: bool):
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states: torch.Tensor, *_args: Any, **_kwargs: Any) -> Any:
        return (hidden_states,) if self.as_tuple else hidden_states


class _Inject(_PassThrough):
    """Stands in for block ``L``: returns the hidden states the editor computed for its output."""

    def __init__(self, hidden: torch.Tensor, as_tuple: bool):
        super().__init__(as_tuple)
        self.hidden = hidden

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return super().forward(self.hidden)


def _segments(position_ids: torch.Tensor) -> torch.Tensor | None:
    """[N] segment number of each token of a packed row (positions restart per segment), None if one row."""
    if position_ids.dim() != 2 or position_ids.shape[0] != 1 or position_ids.shape[1] < 2:
        return None
    restarts = position_ids[0, 1:] != position_ids[0, :-1] + 1
    if not bool(restarts.any()):
        return None
    return torch.cat([restarts.new_zeros(1), restarts]).long().cumsum(0)


def _restricted(mask: Any, same: torch.Tensor) -> Any:
    """``mask`` (a block's 4-D attention mask, bool or additive, or None = plain causal) allowing only
    attention within a segment; anything else (a flash or flex mask object) is returned unchanged and the
    editor's check against the full forward decides."""
    if mask is None:
        n = same.shape[-1]
        causal = torch.ones((n, n), dtype=torch.bool, device=same.device).tril()
        return (causal & same)[None, None]
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or tuple(mask.shape[-2:]) != tuple(same.shape):
        return mask
    same = same.to(mask.device)
    if mask.dtype == torch.bool:
        return mask & same
    return mask.masked_fill(~same, torch.finfo(mask.dtype).min)


def _mask_argument_index(block: torch.nn.Module) -> int | None:
    """Position of ``attention_mask`` among a block's positional arguments (GPT-2 passes it positionally)."""
    names = [n for n in inspect.signature(type(block).forward).parameters][1:]
    return names.index("attention_mask") if "attention_mask" in names else None


#: logit post-processing a family's LM head forward applies after the output projection: (config key, op)
_HEAD_TRANSFORMS: tuple[tuple[str, str], ...] = (
    ("final_logit_softcapping", "softcap"),  # Gemma 2/3
    ("logit_scale", "multiply"),  # Cohere
    ("logits_scaling", "divide"),  # Granite
)


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
        self._block_tuple: bool | None = None  # whether a block returns a tuple (learned at the first lower pass)
        #: None when the model can be driven in two parts, else one line saying why not (for the editor to
        #: announce with its fallback to the full forward)
        self.reason: str | None = self._why_not()

    @property
    def possible(self) -> bool:
        """Whether the model can be driven in two parts at all (:attr:`reason` says why not)."""
        return self.reason is None

    def _why_not(self) -> str | None:
        name = type(self.model).__name__
        if self.block_index is None:
            where = f"the decoder block list {self.blocks_path}" if self.blocks_path else "a decoder block list editkit can find"
            return f"{self.module_path} is not inside {where}"
        decoder = self.decoder()
        if decoder is None:
            return f"{name} has no get_decoder() returning its decoder"
        if "inputs_embeds" not in _forward_params(type(decoder)):
            return f"{type(decoder).__name__}.forward takes no inputs_embeds"
        if not _is_under(self.model, decoder, self.blocks_path):
            return f"the block list {self.blocks_path} is not inside {name}.get_decoder()"
        if not isinstance(getattr(self.model, "get_output_embeddings", lambda: None)(), torch.nn.Module):
            return f"{name} has no output embeddings (LM head)"
        return None

    def decoder(self) -> torch.nn.Module | None:
        get = getattr(self.model, "get_decoder", None)
        try:
            decoder = get() if callable(get) else None
        except Exception:  # noqa: BLE001 - transformers raises for the few models without a rule
            return None
        return decoder if isinstance(decoder, torch.nn.Module) else None

    def module_io(self, batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Input [B, T, D] and output [B, T, H] of the wrapped module (nothing applied), stopping the
        forward right there; works on any model, split or not."""
        captured: dict[str, torch.Tensor] = {}

        def grab(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            captured["in"], captured["out"] = args[0].detach(), capture(output)
            raise _Stop

        forward_until_stop(self.model, batch, [self.module.register_forward_hook(grab)])
        if "in" not in captured:
            raise EditkitError(f"{self.module_path} was not called in the forward pass")
        shape = _token_shape(batch)
        return tokens_3d(captured["in"], shape), tokens_3d(captured["out"], shape)

    def module_inputs(self, batch: PromptBatch) -> torch.Tensor:
        """[B, T, D] input of the wrapped module (nothing applied)."""
        return self.module_io(batch)[0]

    def lower(self, batch: PromptBatch | dict[str, Any]) -> LowerPart:
        """Block ``L``'s view of ``batch`` with nothing applied; computed once per edit. ``batch`` may also be
        the model's forward arguments (a cache of earlier tokens among them)."""
        captured: dict[str, Any] = {}
        block = resolve_module(self.model, f"{self.blocks_path}.{self.block_index}")

        def grab_module(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            # a copy: a block may add to its FFN output in place (Falcon: ``mlp_output += attention_output``)
            captured["in"], captured["out"] = args[0].detach(), capture(output)

        def grab_block_in(_module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor):
                captured["block_in"] = capture(hidden)

        def grab_block(_module: torch.nn.Module, _args: tuple, output: Any) -> None:
            captured["tuple"] = isinstance(output, tuple)
            captured["block"] = (output[0] if isinstance(output, tuple) else output).detach()
            raise _Stop

        hooks = [
            block.register_forward_pre_hook(grab_block_in, with_kwargs=True),
            self.module.register_forward_hook(grab_module),
            block.register_forward_hook(grab_block),
        ]
        forward_until_stop(self.model, batch, hooks)
        if "block" not in captured:
            raise EditkitError(f"{self.blocks_path}.{self.block_index} was not called in the forward pass")
        self._block_tuple = captured["tuple"]
        shape = _token_shape(batch)
        module_in, module_out = tokens_3d(captured["in"], shape), tokens_3d(captured["out"], shape)
        return LowerPart(module_in, module_out, captured["block"], captured.get("block_in"))

    def _blocks_return_tuples(self, hidden: torch.Tensor) -> bool:
        if self._block_tuple is None:  # learn it from a one-token forward that stops at block L
            ids = torch.zeros((1, 1), dtype=torch.long, device=hidden.device)
            self.lower({"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False})
        return bool(self._block_tuple)

    @contextmanager
    def _from_block(self, start: int, hidden: torch.Tensor, position_ids: torch.Tensor, packed: bool) -> Iterator[None]:
        """Blocks below ``start`` replaced by stand-ins, ``hidden`` entering block ``start``; with ``packed``,
        every block from ``start`` on has its attention mask restricted to the row segments of
        ``position_ids``."""
        as_tuple = self._blocks_return_tuples(hidden)
        parent_path, _, attr = self.blocks_path.rpartition(".")
        parent = resolve_module(self.model, parent_path) if parent_path else self.model
        blocks = getattr(parent, attr)
        real = list(blocks)[start:]
        stand_ins: list[torch.nn.Module] = [_PassThrough(as_tuple) for _ in range(max(0, start - 1))]
        hooks = []
        if start > 0:
            stand_ins.append(_Inject(hidden, as_tuple))
        else:  # nothing below to stand in for: the hidden states replace the first block's input
            hooks.append(real[0].register_forward_pre_hook(_input_hook(real[0], hidden), with_kwargs=True))
        segments = _segments(position_ids) if packed else None
        if segments is not None:
            same = segments[:, None] == segments[None, :]
            for block in real:
                hooks.append(block.register_forward_pre_hook(_mask_hook(block, same), with_kwargs=True))
        setattr(parent, attr, torch.nn.ModuleList(stand_ins + real))
        try:
            yield
        finally:
            setattr(parent, attr, blocks)
            for hook in hooks:
                hook.remove()

    def upper_logits(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        start: int | None = None,
    ) -> torch.Tensor:
        """[K, V] logits at (rows, cols), running only the blocks from ``start`` on, on ``hidden`` [B, T, D]
        entering block ``start``: by default ``L + 1`` (``hidden`` is block ``L``'s output, what an editor
        that adds to the module's output trains); an editor that trains a weight inside block ``L`` passes
        ``start=L`` and block ``L``'s input. ``attention_mask`` None with one row of ``position_ids`` that
        restart: packed rows (see :class:`PackedRows`)."""
        assert self.block_index is not None
        start = self.block_index + 1 if start is None else start
        if self.reason is not None:
            raise EditkitError(f"no split forward on this model: {self.reason}")
        decoder = self.decoder()
        embed = self.model.get_input_embeddings()
        width = getattr(embed, "embedding_dim", hidden.shape[-1])
        # on the embedding's device: with a --device-map the blocks, and so ``hidden``, may sit elsewhere
        weight = getattr(embed, "weight", None)
        device = weight.device if isinstance(weight, torch.Tensor) else hidden.device
        placeholder = torch.zeros((*hidden.shape[:-1], width), dtype=hidden.dtype, device=device)
        with self._from_block(start, hidden, position_ids, packed=attention_mask is None):
            out = decoder(
                inputs_embeds=placeholder, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
        final = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return self.head(final[rows.to(final.device), cols.to(final.device)])

    def output_is_additive(self, batch: PromptBatch | dict[str, Any]) -> bool:
        """Whether adding ``d`` to the module's output adds exactly ``d`` to block ``L``'s output (checked
        once per model and module on ``batch`` with a random ``d``). False where the FFN output passes a norm
        before the residual add (Gemma-2/3's post-FFN norm): the editor's change must then run through the
        rest of block ``L`` (:meth:`edited_logits` does)."""
        key = ("output-additive", self.module_path)
        cache = model_cache(self.model)
        if key not in cache:
            plain = self.lower(batch)
            generator = torch.Generator().manual_seed(0)
            noise = torch.randn(plain.module_out.shape, generator=generator).to(plain.module_out) * 0.1
            handle = self.module.register_forward_hook(lambda _m, _a, out: out + like_module_tensor(noise, out))
            try:
                shifted = self.lower(batch)
            finally:
                handle.remove()
            cache[key] = mismatch(shifted.block_out, plain.block_out + noise) is None
        return bool(cache[key])

    def edited_logits(
        self,
        lower: LowerPart,
        delta: torch.Tensor,
        additive: bool,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        """[K, V] logits at (rows, cols) with ``delta`` [B, T, H] added to the module's output: from block
        ``L``'s output when the block passes the change straight through (``additive``, see
        :meth:`output_is_additive`), else from block ``L``'s input through all of block ``L`` with the
        change added where the module returns. ``lower`` and ``delta`` in the layout of ``position_ids``
        (packed or padded)."""
        assert self.block_index is not None
        if additive:
            hidden = lower.block_out + delta.to(lower.block_out.dtype)
            return self.upper_logits(hidden, attention_mask, position_ids, rows, cols)
        if lower.block_in is None:
            raise EditkitError(f"block {self.block_index}'s input was not captured; use the plain lower pass")
        change = delta.to(lower.module_out.dtype)
        handle = self.module.register_forward_hook(lambda _m, _a, out: out + like_module_tensor(change, out))
        try:
            return self.upper_logits(lower.block_in, attention_mask, position_ids, rows, cols, start=self.block_index)
        finally:
            handle.remove()

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """The LM head on final hidden states, with the family's logit post-processing."""
        logits = self.model.get_output_embeddings()(final)
        # the top-level config, not the text config: a multimodal wrapper's forward (Gemma-3 4B+) does not
        # soft-cap even though its text config names a value
        config = self.model.config
        for key, op in _HEAD_TRANSFORMS:
            value = getattr(config, key, None)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if op == "softcap":
                logits = torch.tanh(logits / value) * value
            elif op == "multiply":
                logits = logits * value
            else:
                logits = logits / value
        return logits


def _input_hook(block: torch.nn.Module, hidden: torch.Tensor) -> Any:
    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        if "hidden_states" in kwargs or not args:
            kwargs["hidden_states"] = hidden
            return args, kwargs
        return (hidden, *args[1:]), kwargs

    return hook


def _mask_hook(block: torch.nn.Module, same: torch.Tensor) -> Any:
    index = _mask_argument_index(block)

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        hidden = args[0] if args else kwargs.get("hidden_states")
        here = same.to(hidden.device) if isinstance(hidden, torch.Tensor) else same  # a --device-map block
        if "attention_mask" in kwargs or index is None or index >= len(args):
            kwargs["attention_mask"] = _restricted(kwargs.get("attention_mask"), here)
        else:
            args = (*args[:index], _restricted(args[index], here), *args[index + 1 :])
        return args, kwargs

    return hook


def _is_under(model: torch.nn.Module, ancestor: torch.nn.Module, path: str) -> bool:
    """Whether the module at ``path`` lies inside ``ancestor``."""
    target = resolve_module(model, path)
    return any(m is target for m in ancestor.modules())


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

    def pack_lower(self, lower: LowerPart) -> LowerPart:
        """Every tensor of a lower pass in the packed layout."""
        block_in = None if lower.block_in is None else self.pack(lower.block_in)
        return LowerPart(self.pack(lower.module_in), self.pack(lower.module_out), self.pack(lower.block_out), block_in)


def mismatch(short: torch.Tensor, full: torch.Tensor) -> str | None:
    """None when a shortcut's values are the full forward's up to the rounding of a reordered computation,
    else one line saying by how much they differ (for an editor's fallback announcement)."""
    if short.shape != full.shape:
        return f"shape {tuple(short.shape)} instead of {tuple(full.shape)}"
    tolerance = 1e-3 if full.dtype == torch.float32 else 3e-2
    short, full = short.float(), full.float()
    scale = max(1.0, float(full.abs().max()))
    diff = float((short - full).abs().max()) if full.numel() else 0.0
    if diff <= tolerance * scale:
        return None
    return f"max abs difference {diff:.3g} from the full forward (tolerance {tolerance * scale:.3g})"


def logits_match(short: torch.Tensor, full: torch.Tensor) -> bool:
    """Whether a shortcut's logits are the full forward's, up to the rounding of a reordered computation."""
    return mismatch(short, full) is None


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
