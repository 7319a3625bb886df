"""FT: fine-tune one FFN output projection in place, per edit, with a fresh Adam (as EasyEdit does).

Snapshot, restore, state and the float32 master copy on half-precision models come from
:class:`~editkit.tier.WeightEditor`; this file is the objective and the training loop.

Speed: the weight being tuned sits in block ``L``; blocks below ``L`` never change during an edit, so the
hidden states entering block ``L`` are computed once per edit and each step runs only blocks ``L..N-1``
through the model's own decoder (:meth:`~editkit.partial.SplitForward.upper_logits` with ``start=L``, so
learned positions, embedding scales and per-layer attention types are done as in the full forward); the
vocabulary projection is computed only at the positions the loss reads. On the first edit the shortcut is
checked against the model's own full forward (:class:`~editkit.tier.FastPath`), which is announced, with
its reason, if it ever fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from editkit.batching import tokenize_pair
from editkit.checks import layer_module_path
from editkit.editor import _forward_params
from editkit.partial import SplitForward, block_input
from editkit.requests import EditRequest
from editkit.tier import FULL, FastPath, WeightEditor, require_tokens

from .config import FTConfig

#: EasyEdit's FT layer for LLaMA (layer 21 of 32), scaled to the model's depth when ``layer`` is None.
OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS = 21, 32
#: the name of the shortcut loop in the edit stats
UPPER = "upper"


@dataclass(frozen=True)
class _Problem:
    """One request as the loss sees it: one unpadded row, the positions whose logits the loss reads."""

    input_ids: torch.Tensor  # [1, T]
    positions: torch.Tensor  # [K]
    targets: torch.Tensor  # ft-m: [K], the token each position must predict; ft-l: [n], the bag of targets


class FTEditor(WeightEditor):
    """Fine-tunes exactly one FFN output projection weight; every other parameter stays frozen."""

    config_class = FTConfig
    official_layer: ClassVar[tuple[int, int]] = (OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS)

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: FTConfig | None = None):
        super().__init__(model, tokenizer, config)
        self.module_path = layer_module_path(model, self.config.layer, self.official_layer)
        self.edit_weights([self.module_path])
        self.weight = self.weights[self.module_path]  # the model's own tensor
        self.split = SplitForward(model, self.module_path)
        self._keep_logits = "logits_to_keep" in _forward_params(type(model))
        self.fast_path = FastPath(self.split.reason, self)

    # ------------------------------------------------------------------ editing
    def edit(self, request: EditRequest) -> dict[str, Any]:
        start = time.perf_counter()
        cfg: FTConfig = self.config
        problem = self._problem(request)
        path, weight = self.module_path, self.weight
        iterations, loss_value = 0, float("nan")
        with torch.enable_grad():  # callers (scorers) may hold no_grad
            hidden = self._hidden_entering_block(problem)
            master = self.master(path)
            at_start = master.detach().clone() if cfg.norm_constraint is not None else None
            weight.requires_grad_(True)
            try:
                optimiser = torch.optim.Adam([master], lr=cfg.lr, weight_decay=cfg.weight_decay)
                for _ in range(cfg.steps):
                    loss = self._loss(self._logits(problem, hidden), problem.targets)
                    loss_value = float(loss.detach())
                    if loss_value < cfg.early_stop_loss:
                        break
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    self.move_grad(path)
                    optimiser.step()
                    iterations += 1
                    if at_start is not None:
                        with torch.no_grad():
                            master.copy_(torch.clamp(master, at_start - cfg.norm_constraint, at_start + cfg.norm_constraint))
                    self.write_back(path)
            finally:
                weight.requires_grad_(False)
                weight.grad = master.grad = None
        self.num_edits += 1
        loop = UPPER if hidden is not None else FULL
        return {"iterations": iterations, "loss": loss_value, "seconds": time.perf_counter() - start, "loop": loop}

    def _problem(self, request: EditRequest) -> _Problem:
        prompt_ids, target_ids = tokenize_pair(self.tokenizer, request.prompt, request.target)
        require_tokens(request, len(prompt_ids), len(target_ids))
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
            return logits if self._keep_logits else logits[problem.positions]
        # one unpadded row: no attention mask, positions 0..T-1, the edited block and those above it
        positions = torch.arange(problem.input_ids.shape[1], device=problem.input_ids.device)[None]
        rows = torch.zeros_like(problem.positions)
        return self.split.upper_logits(hidden, None, positions, rows, problem.positions, start=self.split.block_index)

    def _hidden_entering_block(self, problem: _Problem) -> torch.Tensor | None:
        """The hidden states entering the edited block, when the shortcut is usable (else None).

        They do not change while this edit trains, so they are computed once per edit; the first time, the
        shortcut is compared with the full forward."""
        if not self.fast_path.usable:
            return None
        split = self.split
        hidden = block_input(self.model, split.blocks_path, split.block_index, {"input_ids": problem.input_ids, "use_cache": False})
        if hidden is None:
            self.fast_path.fall_back(f"block {split.block_index} got no hidden states")
            return None
        mode = self.fast_path.choose(lambda: self._logits(problem, None), {UPPER: lambda: self._logits(problem, hidden)})
        return hidden if mode == UPPER else None
