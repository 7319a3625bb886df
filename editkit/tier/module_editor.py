"""Base of editors that act at one module (an FFN down-projection) and never change base weights.

What MEMOIR, GRACE and WISE share lives here: the module from the config's ``layer`` (or the method's
official depth scaled to this model), the split forward around its block (:mod:`editkit.partial`), the
one fast-path check, the encoded edit batch with its empty-token check, the per-row routing hook, and the
module path recorded in (and checked against) a saved state. A subclass supplies its maths: what an edit
trains, how a row is routed, what its state holds.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch

from editkit.batching import PromptBatch, encode
from editkit.checks import layer_module_path
from editkit.editor import Editor, EditorConfig
from editkit.errors import EditkitError
from editkit.partial import SplitForward
from editkit.requests import EditRequest

from .common import FastPath, check_state_module, label, require_tokens

#: ``decide(module_input, module_output, prompt_mask)`` in the prefill pass
Decide = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]
#: ``apply(decision, module_input, module_output, prefill)`` in every pass: the new output, or None to keep it
Apply = Callable[[Any, torch.Tensor, torch.Tensor, bool], "torch.Tensor | None"]


class ModuleEditor(Editor):
    """An editor whose edit state sits at the output of one module (``self.module_path``).

    Subclasses set ``official_layer`` (layer, of how many) for ``layer = None`` and a config class with a
    ``layer`` field; they implement :meth:`edit`, :meth:`reset` and, when they route per row,
    :meth:`routing` with :meth:`routed`.
    """

    #: the method's official layer and the depth of the model it was chosen on, e.g. (27, 32)
    official_layer: ClassVar[tuple[int, int]]

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: EditorConfig | None = None):
        super().__init__(model, tokenizer, config)
        self.module_path = layer_module_path(model, getattr(self.config, "layer"), self.official_layer)
        self.split = SplitForward(model, self.module_path)
        self.module = self.split.module
        self.fast_path = FastPath(self.split.possible)

    # ------------------------------------------------------------------ editing
    def training_batch(self, request: EditRequest, prompts: Sequence[str] | None = None) -> PromptBatch:
        """The right-padded training batch of one edit: ``prompts`` (default: the request's prompt; row 0
        must be the plain prompt) each continued by the target. Refuses an empty prompt or target."""
        rows = list(prompts) if prompts is not None else [request.prompt]
        batch = encode(self.tokenizer, rows, [request.target] * len(rows), device=self.device)
        require_tokens(request, int(batch.prompt_mask[0].sum()), int(batch.target_mask[0].sum()))
        return batch

    @contextmanager
    def hooked(self, change: Callable[[torch.Tensor, torch.Tensor, int], "torch.Tensor | None"]) -> Iterator[None]:
        """Inside the block, call ``n`` of the module returns ``change(input, output, n)`` (None: unchanged)."""
        calls = [0]

        def hook(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            calls[0] += 1
            return change(args[0], output, calls[0] - 1)

        handle = self.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    # ---------------------------------------------------------------- routing
    @contextmanager
    def routed(self, batch: PromptBatch, decide: Decide, apply: Apply) -> Iterator[None]:
        """Per-row routing for :meth:`routing`: the first pass of the module (the prefill, where every row's
        prompt is in view) calls ``decide`` with the batch's prompt mask; every pass, decode steps included,
        then calls ``apply`` with that one decision, so a row keeps its route for all its tokens."""
        prompt_mask = batch.prompt_mask.to(self.device)
        decided: list[Any] = []

        def change(acts: torch.Tensor, output: torch.Tensor, call: int) -> torch.Tensor | None:
            if not decided:
                if tuple(acts.shape[:2]) != tuple(prompt_mask.shape):
                    raise EditkitError(
                        f"{label(self)} routing: the first forward pass has shape "
                        f"{tuple(acts.shape[:2])}, but the batch it routes is {tuple(prompt_mask.shape)}"
                    )
                decided.append(decide(acts, output, prompt_mask))
            return apply(decided[0], acts, output, call == 0)

        with self.hooked(change):
            yield

    # -------------------------------------------------------------------- state
    def state_metadata(self) -> dict[str, Any]:
        """The module path, which :meth:`check_state_module` compares on load; subclasses add theirs."""
        return {"module": self.module_path}

    def check_state_module(self, metadata: dict[str, Any]) -> None:
        """A saved state belongs to the module it was trained at."""
        check_state_module(self, metadata)
