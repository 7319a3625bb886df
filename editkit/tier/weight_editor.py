"""Base of editors that change base weights in place: FT, ROME, MEMIT, AlphaEdit.

The model is shared by every editor of a comparison, so such an editor must give it back exactly as it
found it: each weight it edits is snapshotted when the editor is built and copied back, bit for bit, by
:meth:`reset`. Its saved state is the edited weights themselves, so a reload reproduces the logits exactly.

Every edited weight has a float32 *master*. On a float32 model the master is the weight itself, so nothing
is copied and nothing changes. On a float16/bfloat16 model it is a float32 copy that keeps every update:
the model's weight is the master cast to its dtype after each change. Without it Adam's second moment and
most small updates underflow or round away in half precision (FT in float16 wrote nan), and a long stream
of rank-one updates would be rounded away one by one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch

from editkit.editor import Editor
from editkit.errors import ConfigError, EditkitError
from editkit.layers import linear_weight_in_out, resolve_module

from .common import label

#: prefix of an edited weight's master in the saved state (``weight:<module path>``)
WEIGHT_PREFIX = "weight:"


class WeightEditor(Editor):
    """An editor that rewrites the weights of some Linear modules of the model.

    A subclass declares the modules with :meth:`edit_weights` in its ``__init__`` and implements
    :meth:`edit`, training :meth:`master` with an optimiser (then :meth:`move_grad` / :meth:`write_back`)
    or adding solved updates with :meth:`add_to_weight`. :meth:`reset` and the state are provided; a method
    with more edit state than the weights adds :meth:`extra_state`, :meth:`load_extra_state` and
    :meth:`reset_extra`.
    """

    modifies_base_weights: ClassVar[bool] = True

    def edit_weights(self, paths: Sequence[str]) -> None:
        """Declare the modules this editor edits (once, in ``__init__``): snapshot them, make their masters."""
        self.weight_paths: list[str] = list(dict.fromkeys(paths))
        #: the model's own weight tensors, in each module's layout
        self.weights: dict[str, torch.Tensor] = {}
        self._transposed: dict[str, bool] = {}
        for path in self.weight_paths:
            weight, transposed = linear_weight_in_out(resolve_module(self.model, path))
            if not weight.is_floating_point():
                raise ConfigError(f"{path}: weight of dtype {weight.dtype} cannot be edited")
            self.weights[path], self._transposed[path] = weight, transposed
        self.model.requires_grad_(False)
        self._original = {p: w.detach().clone() for p, w in self.weights.items()}  # what reset() restores
        self._masters = {p: w if w.dtype == torch.float32 else w.detach().float().clone() for p, w in self.weights.items()}
        self.num_edits = 0

    # ------------------------------------------------------------- master copy
    def master(self, path: str) -> torch.Tensor:
        """The float32 master of ``path``'s weight, in the module's layout: the tensor an optimiser updates
        (the weight itself on a float32 model, so gradients land on it directly)."""
        return self._masters[path]

    def weight_matrix(self, path: str) -> torch.Tensor:
        """The float32 master of ``path``'s weight as [out, in] (a view; GPT-2's Conv1D stores [in, out])."""
        master = self._masters[path]
        return master.T if self._transposed[path] else master

    def add_to_weight(self, path: str, delta: torch.Tensor) -> None:
        """``W += delta`` ([out, in]) in float32, then the model's weight from the master."""
        with torch.no_grad():
            delta = delta.to(self._masters[path].device, torch.float32)
            self._masters[path] += delta.T if self._transposed[path] else delta
        self.write_back(path)

    def move_grad(self, path: str) -> None:
        """Before an optimiser step: the master takes the weight's gradient, in float32."""
        master, weight = self._masters[path], self.weights[path]
        if master is not weight:
            master.grad = None if weight.grad is None else weight.grad.float()
            weight.grad = None

    def write_back(self, path: str) -> None:
        """After a change of the master: the model's weight takes its value (nothing when they are one)."""
        master, weight = self._masters[path], self.weights[path]
        if master is not weight:
            with torch.no_grad():
                weight.copy_(master.detach())

    # ------------------------------------------------------------------ reset
    def reset(self) -> None:
        with torch.no_grad():
            for path, weight in self.weights.items():
                weight.copy_(self._original[path])
                if self._masters[path] is not weight:
                    self._masters[path].copy_(self._original[path].float())
                self._masters[path].grad = None
        self.num_edits = 0
        self.reset_extra()

    def reset_extra(self) -> None:
        """Forget a method's own edit state besides the weights (AlphaEdit's accumulated keys)."""

    # -------------------------------------------------------------------- state
    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors besides the weights a method keeps across edits (default none)."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise EditkitError(f"{label(self)} state has unexpected tensors {sorted(tensors)}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{WEIGHT_PREFIX + p: m.detach() for p, m in self._masters.items()}, **self.extra_state()}

    def state_metadata(self) -> dict[str, Any]:
        return {"edits": self.num_edits, "modules": self.weight_paths}

    def before_loading_state(self) -> None:
        """Hook run after the state's modules are checked and before its tensors are loaded (the
        locate-then-edit editors derive their statistics from the unedited weights here)."""

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        metadata = metadata or {}
        name = label(self)
        modules = metadata.get("modules", self.weight_paths)
        if modules != self.weight_paths:
            raise EditkitError(f"{name} state edits {modules}, but this editor edits {self.weight_paths}")
        weights = {k[len(WEIGHT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(WEIGHT_PREFIX)}
        if set(weights) != set(self.weight_paths):
            raise EditkitError(f"{name} state holds the weights of {sorted(weights)}, but this editor edits {self.weight_paths}")
        for path, saved in weights.items():
            master = self._masters[path]
            if saved.shape != master.shape or saved.dtype != torch.float32:
                raise EditkitError(
                    f"{name} state weight of {path} is {tuple(saved.shape)} {saved.dtype}, expected "
                    f"{tuple(master.shape)} float32"
                )
        self.before_loading_state()
        with torch.no_grad():
            for path, saved in weights.items():
                self._masters[path].copy_(saved)
                self.write_back(path)
        self.load_extra_state({k: v for k, v in tensors.items() if not k.startswith(WEIGHT_PREFIX)})
        self.num_edits = int(metadata.get("edits", 0))
