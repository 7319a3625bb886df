"""FT: fine-tune one FFN output projection in place, per edit, with a fresh Adam (as EasyEdit does).

The only editor that changes base weights: it keeps a copy of the unedited weight for :meth:`reset`, and its
saved state is the edited weight itself, so a reload reproduces the logits bit for bit.

Speed: the weight being tuned sits in block ``L``; blocks below ``L`` never change during an edit, so the
hidden states entering block ``L`` are computed once per edit and each step runs only blocks ``L..N-1`` (the
block list is swapped for its upper part and the cached states are fed as ``inputs_embeds``); the vocabulary
projection is computed only at the positions the loss reads (``logits_to_keep``). That shortcut is only
valid when the model feeds ``inputs_embeds`` straight into its first block, so on the first edit it is
checked against the model's own full forward; models that add position embeddings or scale the embeddings
(GPT-2, Gemma...) fail the check and use the full forward from then on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from editkit.batching import tokenize_pair
from editkit.editor import Editor, _forward_params
from editkit.errors import ConfigError, EditkitError
from editkit.checks import layer_module_path
from editkit.layers import linear_weight_in_out, resolve_module
from editkit.partial import blocks_from, enclosing_block
from editkit.requests import EditRequest

from .config import FTConfig

#: EasyEdit's FT layer for LLaMA (layer 21 of 32), scaled to the model's depth when ``layer`` is None.
OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS = 21, 32


class _StopForward(Exception):
    """Raised by a pre-hook once the hidden states entering the edited block are captured."""


@dataclass(frozen=True)
class _Problem:
    """One request as the loss sees it: one unpadded row, the positions whose logits the loss reads."""

    input_ids: torch.Tensor  # [1, T]
    positions: torch.Tensor  # [K]
    targets: torch.Tensor  # ft-m: [K], the token each position must predict; ft-l: [n], the bag of targets


class FTEditor(Editor):
    """Fine-tunes exactly one FFN output projection weight; every other parameter stays frozen."""

    config_class = FTConfig
    name: ClassVar[str] = "ft"
    #: the conformance suite skips its "base weights unchanged" check for editors that declare this
    modifies_base_weights: ClassVar[bool] = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: FTConfig | None = None):
        super().__init__(model, tokenizer, config)
        cfg: FTConfig = self.config
        named = cfg.module.strip() if cfg.module is not None else cfg.layer
        self.module_path = layer_module_path(model, named, (OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS))
        self._weight = linear_weight_in_out(resolve_module(model, self.module_path))[0]
        if not self._weight.is_floating_point():
            raise ConfigError(f"{self.module_path}: weight of dtype {self._weight.dtype} cannot be fine-tuned")
        model.requires_grad_(False)
        self._original = self._weight.detach().clone()
        self.num_edits = 0
        self._blocks_path, self._block_index = enclosing_block(model, self.module_path)
        params = _forward_params(type(model))
        self._keep_logits = "logits_to_keep" in params
        # None: not checked yet; True/False: the upper-blocks shortcut does/does not match the full forward
        self._fast_ok: bool | None = None if self._block_index is not None and "inputs_embeds" in params else False

    # ------------------------------------------------------------------ editing
    def edit(self, request: EditRequest) -> dict[str, Any]:
        start = time.perf_counter()
        cfg: FTConfig = self.config
        problem = self._problem(request)
        weight = self._weight
        at_start = weight.detach().clone() if cfg.norm_constraint is not None else None
        iterations, loss_value = 0, float("nan")
        with torch.enable_grad():  # callers (scorers) may hold no_grad
            hidden = self._hidden_entering_block(problem)
            weight.requires_grad_(True)
            try:
                optimiser = torch.optim.Adam([weight], lr=cfg.lr, weight_decay=cfg.weight_decay)
                for _ in range(cfg.steps):
                    loss = self._loss(self._logits(problem, hidden), problem.targets)
                    loss_value = float(loss.detach())
                    if loss_value < cfg.early_stop_loss:
                        break
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    iterations += 1
                    if at_start is not None:
                        with torch.no_grad():
                            weight.copy_(torch.clamp(weight, at_start - cfg.norm_constraint, at_start + cfg.norm_constraint))
            finally:
                weight.requires_grad_(False)
                weight.grad = None
        self.num_edits += 1
        return {"iterations": iterations, "loss": loss_value, "seconds": time.perf_counter() - start}

    def reset(self) -> None:
        with torch.no_grad():
            self._weight.copy_(self._original)
        self.num_edits = 0

    def _problem(self, request: EditRequest) -> _Problem:
        prompt_ids, target_ids = tokenize_pair(self.tokenizer, request.prompt, request.target)
        if not prompt_ids or not target_ids:
            raise EditkitError(f"edit request {request.id}: the {'prompt' if not prompt_ids else 'target'} has no tokens")
        last_prompt = len(prompt_ids) - 1
        if self.config.objective == "ft-m":  # position i predicts token i + 1: the target, teacher forced
            ids, positions = prompt_ids + target_ids, range(last_prompt, last_prompt + len(target_ids))
        else:  # ft-l: the whole bag of target tokens from the last prompt position
            ids, positions = prompt_ids, [last_prompt]
        device = self.device
        return _Problem(
            torch.tensor([ids], device=device),
            torch.tensor(list(positions), device=device),
            torch.tensor(target_ids, device=device),
        )

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # bf16/fp16 models: the loss in float32
        if self.config.objective == "ft-m":
            return F.cross_entropy(logits, targets)
        return -torch.log_softmax(logits[-1], dim=-1)[targets].mean()

    # ----------------------------------------------------------- forward passes
    def _logits(self, problem: _Problem, hidden: torch.Tensor | None) -> torch.Tensor:
        """[K, V] logits at ``problem.positions``; from the cached block input when ``hidden`` is given."""
        kwargs: dict[str, Any] = {"use_cache": False}
        if self._keep_logits:
            kwargs["logits_to_keep"] = problem.positions
        if hidden is None:
            logits = self.model(input_ids=problem.input_ids, **kwargs).logits[0]
        else:
            with blocks_from(self.model, self._blocks_path, self._block_index):  # the edited block and above
                logits = self.model(inputs_embeds=hidden, **kwargs).logits[0]
        return logits if self._keep_logits else logits[problem.positions]

    def _hidden_entering_block(self, problem: _Problem) -> torch.Tensor | None:
        """The hidden states entering the edited block, when the shortcut is usable (else None).

        They do not change while this edit trains, so they are computed once per edit. The first time, the
        shortcut is compared with the full forward.
        """
        if self._fast_ok is False:
            return None
        block = resolve_module(self.model, f"{self._blocks_path}.{self._block_index}")
        captured: list[torch.Tensor] = []

        def grab(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor):
                captured.append(hidden.detach())
            raise _StopForward

        handle = block.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                self.model(input_ids=problem.input_ids, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        hidden = captured[0] if captured else None
        if self._fast_ok is None:
            self._fast_ok = hidden is not None and self._shortcut_matches(problem, hidden)
        return hidden if self._fast_ok else None

    def _shortcut_matches(self, problem: _Problem, hidden: torch.Tensor) -> bool:
        try:
            with torch.no_grad():
                full = self._logits(problem, None).float()
                fast = self._logits(problem, hidden).float()
        except Exception:  # a forward that cannot take inputs_embeds this way: use the full forward
            return False
        return fast.shape == full.shape and torch.allclose(fast, full, rtol=1e-3, atol=1e-3)

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self._weight.detach()}

    def state_metadata(self) -> dict[str, Any]:
        return {"edits": self.num_edits, "module": self.module_path}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        metadata = metadata or {}
        if set(tensors) != {"weight"}:
            raise EditkitError(f"FT state must hold exactly one tensor 'weight', not {sorted(tensors)}")
        module = metadata.get("module", self.module_path)
        if module != self.module_path:
            raise EditkitError(f"FT state edits '{module}', but this editor edits '{self.module_path}'")
        saved, weight = tensors["weight"], self._weight
        if saved.shape != weight.shape or saved.dtype != weight.dtype:
            raise EditkitError(
                f"FT state weight is {tuple(saved.shape)} {saved.dtype}, but {self.module_path} is "
                f"{tuple(weight.shape)} {weight.dtype}"
            )
        with torch.no_grad():
            weight.copy_(saved)
        self.num_edits = int(metadata.get("edits", 0))
