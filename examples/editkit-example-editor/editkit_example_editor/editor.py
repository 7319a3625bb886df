"""Low-rank key→value editing: each edit adds a few key→value pairs to the output of one Linear layer.

For an input ``a`` of the layer the output becomes ``W a + Σ_j (k̂_j · a) v_j`` with ``k̂_j = k_j / |k_j|²``, so
``v_j`` is added in full where the input is the key ``k_j`` and proportionally less elsewhere: a rank-one
update per pair, without touching ``W``. An edit stores one key per position that predicts a target token
(the layer's input there, teacher forced), because one shared vector cannot push different positions towards
different tokens, and trains only its own values (Adam on the target tokens' cross-entropy) with every
earlier pair fixed. The pairs live in a forward hook installed with the first edit and removed by
:meth:`reset`, so an editor with no edits is the base model bit for bit.

Deliberately small (no key statistics as in ROME, no gate as in GRACE): edits stick, at a price in locality.
It shows the ``Editor`` contract, not a method to recommend.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from editkit import Editor, EditorConfig, EditRequest, PromptBatch, encode
from editkit.errors import ConfigError, EditkitError
from editkit.layers import down_proj_path, linear_weight_in_out, num_layers, resolve_module


@dataclass
class LowRankConfig(EditorConfig):
    """``layer``: the block whose MLP down-projection is edited (None: the last block, where a value
    maps most directly onto the next token). ``module``: a dotted path to any ``torch.nn.Linear``,
    which wins over ``layer``. ``lr``/``steps``: Adam on the edit's values; ``early_stop_loss``: an edit
    stops once its loss is below this."""

    layer: int | None = None
    module: str | None = None
    lr: float = 0.5
    steps: int = 40
    early_stop_loss: float = 0.05

    def __post_init__(self) -> None:
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise ConfigError(f"low-rank layer must be None or an integer, not {self.layer!r}")
        if self.module is not None and (not isinstance(self.module, str) or not self.module.strip()):
            raise ConfigError(f"low-rank module must be None or a dotted module path, not {self.module!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"low-rank steps must be an integer >= 1, not {self.steps!r}")
        for name in ("lr", "early_stop_loss"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"low-rank {name} must be a number >= 0, not {value!r}")
        if self.lr == 0:
            raise ConfigError("low-rank lr must be > 0")


class LowRankEditor(Editor):
    """Key→value pairs added to one Linear layer's output, one per target token of each edit."""

    config_class = LowRankConfig
    name: ClassVar[str] = "low-rank"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: LowRankConfig | None = None):
        super().__init__(model, tokenizer, config)
        cfg: LowRankConfig = self.config
        if cfg.module is not None:
            self.module_path = cfg.module.strip()
        else:
            self.module_path = down_proj_path(model, cfg.layer if cfg.layer is not None else num_layers(model) - 1)
        self.module = resolve_module(model, self.module_path)
        weight, stored_in_out = linear_weight_in_out(self.module)
        if stored_in_out:
            raise ConfigError(f"low-rank edits torch.nn.Linear layers; {self.module_path} is a {type(self.module).__name__}")
        model.requires_grad_(False)  # only the values being trained get a gradient
        out_features, in_features = weight.shape
        self.keys = weight.new_zeros((0, in_features))  # k_j / |k_j|², one row per pair
        self.values = weight.new_zeros((0, out_features))
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None  # (keys, values) while an edit trains
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    # ------------------------------------------------------------------ editing
    def edit(self, request: EditRequest) -> dict[str, Any]:
        start = time.perf_counter()
        cfg: LowRankConfig = self.config
        batch = encode(self.tokenizer, [request.prompt], [request.target], device=self.device)
        labels, predicting = batch.target_labels()[0], batch.prediction_mask()[0]
        if not bool(predicting.any()):
            raise EditkitError(f"edit request {request.id}: the target has no tokens")
        keys = self._inputs(batch)[predicting]
        keys = keys / (keys * keys).sum(-1, keepdim=True).clamp_min(1e-12)
        values = self.values.new_zeros((len(keys), self.values.shape[1]), requires_grad=True)
        self._pending = (keys, values)
        self._install_hook()
        optimiser = torch.optim.Adam([values], lr=cfg.lr)
        iterations, loss_value = 0, math.nan
        try:
            with torch.enable_grad():  # callers (scorers) may hold no_grad
                for _ in range(cfg.steps):
                    logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
                    loss = F.cross_entropy(logits[0].float(), labels, ignore_index=-100)
                    loss_value = float(loss.detach())
                    if loss_value < cfg.early_stop_loss:
                        break
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    iterations += 1
        finally:
            self._pending = None
        self.keys = torch.cat([self.keys, keys])
        self.values = torch.cat([self.values, values.detach()])
        return {"iterations": iterations, "loss": loss_value, "seconds": time.perf_counter() - start}

    def _inputs(self, batch: PromptBatch) -> torch.Tensor:
        """[T, in]: the layer's input at every position of a one-row batch. The pairs change the layer's
        output, never its input, so earlier edits do not move a new edit's keys."""
        captured: list[torch.Tensor] = []
        handle = self.module.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0].detach()))
        try:
            with torch.no_grad():
                self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        finally:
            handle.remove()
        return captured[0][0]

    def reset(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.keys, self.values = self.keys[:0], self.values[:0]

    # ---------------------------------------------------------------- inference
    def _install_hook(self) -> None:
        if self._hook is None:
            self._hook = self.module.register_forward_hook(self._add_pairs)

    def _add_pairs(self, _module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        keys, values = self.keys, self.values
        if self._pending is not None:
            keys, values = torch.cat([keys, self._pending[0]]), torch.cat([values, self._pending[1]])
        return output + (inputs[0] @ keys.T) @ values

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys, "values": self.values}

    def state_metadata(self) -> dict[str, Any]:
        return {"module": self.module_path, "pairs": len(self.keys)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        metadata = metadata or {}
        if set(tensors) != {"keys", "values"}:
            raise EditkitError(f"low-rank state must hold 'keys' and 'values', not {sorted(tensors)}")
        if metadata.get("module", self.module_path) != self.module_path:
            raise EditkitError(f"low-rank state edits '{metadata['module']}', but this editor edits '{self.module_path}'")
        keys, values = tensors["keys"], tensors["values"]
        if keys.shape[1:] != self.keys.shape[1:] or values.shape[1:] != self.values.shape[1:] or len(keys) != len(values):
            raise EditkitError(
                f"low-rank state holds keys {tuple(keys.shape)} and values {tuple(values.shape)}, but "
                f"{self.module_path} takes {self.keys.shape[1]} inputs and gives {self.values.shape[1]} outputs"
            )
        self.reset()
        self.keys = keys.to(self.device, self.keys.dtype)
        self.values = values.to(self.device, self.values.dtype)
        if len(self.keys):
            self._install_hook()
