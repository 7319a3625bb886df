"""Base of editors that change base weights in place (FT today; ROME, MEMIT, AlphaEdit next).

The model is shared by every editor of a comparison, so such an editor must give it back exactly as it
found it: the weight it edits is snapshotted when the editor is built and copied back, bit for bit, by
:meth:`reset`. Its saved state is the edited weight itself, so a reload reproduces the logits exactly.

On a float16/bfloat16 model the optimiser works on a float32 master copy of the weight (:meth:`trainable`
and :meth:`write_back`): Adam's second moment and most small updates underflow or round away in half
precision (FT in float16 wrote nan). On a float32 model the master *is* the weight, so nothing changes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from editkit.checks import layer_module_path
from editkit.editor import Editor, EditorConfig
from editkit.errors import ConfigError, EditkitError
from editkit.layers import linear_weight_in_out, resolve_module

from .common import check_state_module, label

HALF = (torch.float16, torch.bfloat16)


class WeightEditor(Editor):
    """An editor that rewrites the weight of one Linear module (``self.module_path``).

    Subclasses set ``official_layer`` (layer, of how many) for ``layer = None`` and a config class with a
    ``layer`` field, and implement :meth:`edit`; :meth:`reset` and the state are provided.
    """

    modifies_base_weights: ClassVar[bool] = True
    #: the method's official layer and the depth of the model it was chosen on, e.g. (21, 32)
    official_layer: ClassVar[tuple[int, int]]

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: EditorConfig | None = None):
        super().__init__(model, tokenizer, config)
        self.module_path = layer_module_path(model, getattr(self.config, "layer"), self.official_layer)
        self.weight = linear_weight_in_out(resolve_module(model, self.module_path))[0]
        if not self.weight.is_floating_point():
            raise ConfigError(f"{self.module_path}: weight of dtype {self.weight.dtype} cannot be edited")
        model.requires_grad_(False)
        self.original = self.weight.detach().clone()  # the snapshot reset() restores
        self.num_edits = 0

    # ------------------------------------------------------------- master copy
    def trainable(self) -> torch.Tensor:
        """The tensor an optimiser updates: the weight itself (float32 models) or a float32 master copy of
        it (half-precision models); gradients flow through the model's own weight either way."""
        return self.weight if self.weight.dtype not in HALF else self.weight.detach().float().requires_grad_(True)

    def write_back(self, master: torch.Tensor) -> None:
        """After an optimiser step: the model's weight takes the master's value (nothing when they are one)."""
        if master is not self.weight:
            with torch.no_grad():
                self.weight.copy_(master.detach())

    def move_grad(self, master: torch.Tensor) -> None:
        """Before an optimiser step: the master takes the weight's gradient (in float32)."""
        if master is not self.weight:
            master.grad = None if self.weight.grad is None else self.weight.grad.float()
            self.weight.grad = None

    # ------------------------------------------------------------------ reset
    def reset(self) -> None:
        with torch.no_grad():
            self.weight.copy_(self.original)
        self.num_edits = 0

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.detach()}

    def state_metadata(self) -> dict[str, Any]:
        return {"edits": self.num_edits, "module": self.module_path}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        metadata = metadata or {}
        name = label(self)
        if set(tensors) != {"weight"}:
            raise EditkitError(f"{name} state must hold exactly one tensor 'weight', not {sorted(tensors)}")
        check_state_module(self, metadata, verb="edits")
        saved, weight = tensors["weight"], self.weight
        if saved.shape != weight.shape or saved.dtype != weight.dtype:
            raise EditkitError(
                f"{name} state weight is {tuple(saved.shape)} {saved.dtype}, but {self.module_path} is "
                f"{tuple(weight.shape)} {weight.dtype}"
            )
        with torch.no_grad():
            weight.copy_(saved)
        self.num_edits = int(metadata.get("edits", 0))
