"""The part of an editor that changes base weights in place: snapshot, exact restore, float32 masters, state.

Written once for ROME, MEMIT and AlphaEdit (and meant to become the shared weight-editor base of the method
middle tier). An editor names the Linear modules it edits; this class

- keeps a copy of each unedited weight, so :meth:`reset` restores them bit for bit;
- keeps a float32 master of each edited weight, so many small updates to a bf16/fp16 model accumulate in
  float32 instead of being rounded away one by one; the model's weight is the master cast to its dtype;
- saves the masters (plus any extra tensors the method keeps) as its state, so a reload reproduces the
  logits exactly.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from editkit.editor import Editor
from editkit.errors import ConfigError, EditkitError
from editkit.layers import linear_weight_in_out, resolve_module

WEIGHT_PREFIX = "weight:"


class WeightEditor(Editor):
    """Base of editors that add updates ``ΔW`` ([out, in], float32) to some Linear weights of the model."""

    modifies_base_weights: ClassVar[bool] = True

    def edit_weights(self, paths: Sequence[str]) -> None:
        """Declare the modules edited (call once, in ``__init__``)."""
        self.weight_paths = list(dict.fromkeys(paths))
        self._weights: dict[str, torch.Tensor] = {}
        self._transposed: dict[str, bool] = {}
        for path in self.weight_paths:
            weight, transposed = linear_weight_in_out(resolve_module(self.model, path))
            if not weight.is_floating_point():
                raise ConfigError(f"{path}: weight of dtype {weight.dtype} cannot be edited")
            self._weights[path], self._transposed[path] = weight, transposed
        self._original = {p: w.detach().clone() for p, w in self._weights.items()}
        self._masters = {p: w.detach().float().clone() for p, w in self._weights.items()}
        self.model.requires_grad_(False)

    def weight(self, path: str) -> torch.Tensor:
        """The float32 master of ``path``'s weight as [out, in]."""
        master = self._masters[path]
        return master.T if self._transposed[path] else master

    def add_to_weight(self, path: str, delta: torch.Tensor) -> None:
        """``W += delta`` ([out, in]) in float32, then write the model's weight from the master."""
        with torch.no_grad():
            delta = delta.to(self._masters[path].device, torch.float32)
            self._masters[path] += delta.T if self._transposed[path] else delta
            self._weights[path].copy_(self._masters[path])

    def restore_weights(self) -> None:
        with torch.no_grad():
            for path, weight in self._weights.items():
                weight.copy_(self._original[path])
                self._masters[path].copy_(self._original[path].float())

    # -------------------------------------------------------------------- state
    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors besides the weights a method keeps across edits (default none)."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise EditkitError(f"{type(self).__name__} state has unexpected tensors {sorted(tensors)}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{WEIGHT_PREFIX + p: m for p, m in self._masters.items()}, **self.extra_state()}

    def load_weight_state(self, tensors: dict[str, torch.Tensor]) -> None:
        weights = {k[len(WEIGHT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(WEIGHT_PREFIX)}
        if set(weights) != set(self.weight_paths):
            raise EditkitError(f"state edits {sorted(weights)}, but this editor edits {self.weight_paths}")
        for path, saved in weights.items():
            master = self._masters[path]
            if saved.shape != master.shape or saved.dtype != torch.float32:
                raise EditkitError(f"state weight of {path} is {tuple(saved.shape)} {saved.dtype}, expected {tuple(master.shape)} float32")
        with torch.no_grad():
            for path, saved in weights.items():
                self._masters[path].copy_(saved)
                self._weights[path].copy_(saved)
        self.load_extra_state({k: v for k, v in tensors.items() if not k.startswith(WEIGHT_PREFIX)})
