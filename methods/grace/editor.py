"""GRACE-like editor: a discrete key → value codebook at one FFN down-projection.

An edit stores the down-projection's input at the last prompt token as a key and trains a value that,
put in place of the down-projection's output at that token (``last``) or at every prompt token
(``prompt``), makes the model produce the target. At inference each row's key is looked up; inside the
nearest key's radius the output is replaced by that key's value, outside every radius the model runs
untouched, bit for bit. Keys match prompts, not facts, so a rephrase usually lands outside the radius:
GRACE's expected profile is high reliability and locality with low generalization.

Speed: the value joins the residual stream at block ``L``'s output, so block ``L`` and everything below it
run once per edit and each step runs only the blocks above it, with the LM head at the target positions
(:mod:`editkit.partial`); the first edit checks this shortcut against the full forward. The module, the
split forward, that check, the routing hook and the state's module check come from
:class:`~editkit.tier.ModuleEditor`; this file is the codebook's maths.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from editkit.batching import PromptBatch
from editkit.editor import RoutingScores
from editkit.errors import EditkitError
from editkit.partial import frozen
from editkit.requests import EditRequest
from editkit.tier import FULL, PADDED, ModuleEditor, target_positions

from .codebook import Codebook
from .config import OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS, GraceConfig

#: rows to change, [R, T] positions to replace in each, [R, H] the value each gets; None = change nothing
Replacement = Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def last_prompt_positions(prompt_mask: torch.Tensor) -> torch.Tensor:
    """[B] column of each row's last prompt token, for left- and right-padded rows alike."""
    width = prompt_mask.shape[1]
    return width - 1 - prompt_mask.flip(1).long().argmax(dim=1)


def _replace(output: torch.Tensor, replacement: Replacement) -> torch.Tensor:
    """``output`` with the replacement's positions set to their values (differentiable in the values)."""
    if replacement is None:
        return output
    rows, positions, values = replacement
    changed = torch.where(positions[..., None], values[:, None, :].to(output.dtype), output.index_select(0, rows))
    return output.index_copy(0, rows, changed)


class GraceEditor(ModuleEditor):
    """Codebook of (key, value, radius); the base weights are never touched."""

    config_class = GraceConfig
    official_layer: ClassVar[tuple[int, int]] = (OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS)
    conformance_variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {"prompt": {"replacement": "prompt"}}

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: GraceConfig | None = None):
        super().__init__(model, tokenizer, config)
        self.codebook = Codebook(self.split.in_features, self.split.out_features, self.device)
        self.num_edits = 0

    # ------------------------------------------------------------------ editing
    def edit(self, request: EditRequest) -> dict[str, Any]:
        start = time.perf_counter()
        cfg: GraceConfig = self.config
        batch = self.training_batch(request)
        positions = self._positions(batch.prompt_mask)
        lower = self.split.lower(batch) if self.fast_path.usable else None
        module_in, module_out = (lower.module_in, lower.module_out) if lower is not None else self.split.module_io(batch)
        last = int(last_prompt_positions(batch.prompt_mask)[0])
        placement = self.codebook.place(
            module_in[0, last], self._initial_value(module_out[0, last]), request.target.strip(), cfg.eps_init
        )
        value = self.codebook.values[placement.entry].clone().requires_grad_(True)
        with torch.enable_grad(), frozen(self.model):
            loss_fn, loop = self._loss_fn(batch, positions, lower, value)
            iterations, first_loss, loss = self._train(loss_fn, value)
        self.codebook.values[placement.entry] = value.detach()
        self.num_edits += 1
        return {
            "iterations": iterations,
            "loss": loss,
            "initial_loss": first_loss,
            "seconds": time.perf_counter() - start,
            "action": placement.action,
            "codebook_size": len(self.codebook),
            "loop": loop,
        }

    def _positions(self, prompt_mask: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: where a matched row's output is replaced."""
        if self.config.replacement == "prompt":
            return prompt_mask.clone()
        positions = torch.zeros_like(prompt_mask)
        positions[torch.arange(len(prompt_mask), device=prompt_mask.device), last_prompt_positions(prompt_mask)] = True
        return positions & prompt_mask

    def _initial_value(self, module_out: torch.Tensor) -> torch.Tensor:
        """The value a new key starts from: the module's own output at the key token (warm) or, as GRACE
        does by default, a seeded uniform draw (cold)."""
        if self.config.value_init == "warm":
            return module_out.float()
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.num_edits)
        return torch.rand(self.codebook.value_dim, generator=generator).to(self.device)

    def _loss_fn(
        self, batch: PromptBatch, positions: torch.Tensor, lower: Any, value: torch.Tensor
    ) -> tuple[Callable[[], torch.Tensor], str]:
        """The training loss and its loop: through the shortcut when it is (or, on the first edit, proves) exact."""
        rows, cols, targets = target_positions(batch)
        replacement = (torch.zeros(1, dtype=torch.long, device=self.device), positions, value[None])

        def full_logits() -> torch.Tensor:
            with self.hooked(lambda _acts, output, call: _replace(output, replacement) if call == 0 else None):
                logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            return logits[rows, cols]

        def short_logits() -> torch.Tensor:
            change = torch.where(positions[..., None], value.to(lower.module_out.dtype) - lower.module_out, 0)
            return self.shortcut_logits(batch, lower, change, batch.attention_mask, batch.position_ids, rows, cols)

        loop = self.fast_path.choose(full_logits, {PADDED: short_logits}) if lower is not None else FULL
        logits = short_logits if loop == PADDED else full_logits
        return (lambda: F.cross_entropy(logits().float(), targets)), loop

    def _train(self, loss_fn: Callable[[], torch.Tensor], value: torch.Tensor) -> tuple[int, float, float]:
        """Adam on the value; returns the steps taken and the first and last loss."""
        cfg: GraceConfig = self.config
        optimiser = torch.optim.Adam([value], lr=cfg.lr)
        iterations, first, loss_value = 0, float("nan"), float("nan")
        for _ in range(cfg.n_iter):
            loss = loss_fn()
            loss_value = float(loss.detach())
            if iterations == 0:
                first = loss_value
            if loss_value <= cfg.early_stop_loss:
                break
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            iterations += 1
        return iterations, first, loss_value

    def reset(self) -> None:
        self.codebook.clear()
        self.num_edits = 0

    # ---------------------------------------------------------------- routing
    def _lookup(self, acts: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the nearest entry and ``radius - distance`` of each row's key (the last prompt token's
        input), ≥ 0 exactly when the row is inside that entry's radius; rows with no prompt get -1. The one
        place keys meet the codebook, so routing and :meth:`routing_scores` can never disagree."""
        last = last_prompt_positions(prompt_mask)
        keys = acts[torch.arange(len(acts), device=acts.device), last]
        entry, distance = self.codebook.nearest(keys)
        margin = self.codebook.radii[entry] - distance
        return entry, torch.where(prompt_mask.any(dim=1), margin, torch.full_like(margin, -1.0))

    def _decide(self, acts: torch.Tensor, prompt_mask: torch.Tensor) -> Replacement:
        entry, margin = self._lookup(acts, prompt_mask)
        active = margin >= 0
        if not bool(active.any()):
            return None
        rows = torch.nonzero(active).flatten()
        return rows, self._positions(prompt_mask)[rows], self.codebook.values[entry[rows]]

    @torch.no_grad()
    def routing_scores(self, batch: PromptBatch) -> RoutingScores:
        """``radius - distance`` to the nearest key; the row's output is replaced iff it is ≥ 0."""
        batch = batch.to(self.device)
        if len(self.codebook) == 0:
            return RoutingScores([-1.0] * len(batch), 0.0, "key radius - distance")
        _, margin = self._lookup(self.split.module_inputs(batch), batch.prompt_mask)
        return RoutingScores(margin, 0.0, "key radius - distance")

    @contextmanager
    def routing(self, batch: PromptBatch) -> Iterator[None]:
        """The prefill replaces the matched rows' prompt positions; decode steps (which only add new
        tokens) are left alone."""
        if len(self.codebook) == 0:
            yield
            return
        with self.routed(
            batch,
            lambda acts, _output, prompt_mask: self._decide(acts, prompt_mask),
            lambda replacement, _acts, output, prefill: _replace(output, replacement) if prefill else None,
        ):
            yield

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.codebook.state()

    def state_metadata(self) -> dict[str, Any]:
        return {**super().state_metadata(), "edits": self.num_edits, "labels": list(self.codebook.labels)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        metadata = metadata or {}
        if set(tensors) != {"keys", "values", "radii"}:
            raise EditkitError(f"GRACE state must hold keys, values and radii, not {sorted(tensors)}")
        self.check_state_module(metadata)
        labels = metadata.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise EditkitError("GRACE state has no list of key labels")
        try:
            self.codebook.load(tensors, labels)
        except ValueError as exc:
            raise EditkitError(f"GRACE state: {exc}") from None
        self.num_edits = int(metadata.get("edits", len(labels)))
