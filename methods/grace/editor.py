"""GRACE-like editor: a discrete key → value codebook at one FFN down-projection.

An edit stores the down-projection's input at the last prompt token as a key and trains a value that,
put in place of the down-projection's output at that token (``last``) or at every prompt token
(``prompt``), makes the model produce the target. At inference each row's key is looked up; inside the
nearest key's radius the output is replaced by that key's value, outside every radius the model runs
untouched, bit for bit. Keys match prompts, not facts, so a rephrase usually lands outside the radius:
GRACE's expected profile is high reliability and locality with low generalization.

Speed: the value joins the residual stream at block ``L``'s output, so block ``L`` and everything below it
run once per edit and each step runs only the blocks above it, with the LM head at the target positions
(:mod:`editkit.partial`); the first edit checks this shortcut against the full forward.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from editkit.batching import PromptBatch, encode
from editkit.checks import layer_module_path
from editkit.editor import Editor, RoutingScores
from editkit.errors import EditkitError
from editkit.partial import SplitForward, frozen, logits_match
from editkit.requests import EditRequest

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


class GraceEditor(Editor):
    """Codebook of (key, value, radius); the base weights are never touched."""

    config_class = GraceConfig
    name: ClassVar[str] = "grace"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: GraceConfig | None = None):
        super().__init__(model, tokenizer, config)
        cfg: GraceConfig = self.config
        self.module_path = layer_module_path(model, cfg.layer, (OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS))
        self.split = SplitForward(model, self.module_path)
        self.codebook = Codebook(self.split.in_features, self.split.out_features, self.device)
        self.num_edits = 0
        #: per-row diagnostics of the last routing decision (nearest entry, distance, radius, replaced)
        self.last_routing: dict[str, torch.Tensor] = {}
        # None: the shortcut is checked on the first edit; then True/False for the rest of the editor's life
        self._fast: bool | None = None if self.split.possible else False

    # ------------------------------------------------------------------ editing
    def edit(self, request: EditRequest) -> dict[str, Any]:
        start = time.perf_counter()
        cfg: GraceConfig = self.config
        batch = encode(self.tokenizer, [request.prompt], [request.target], device=self.device)
        labels = batch.target_labels()
        if not bool(batch.prompt_mask.any()) or not bool((labels != -100).any()):
            part = "prompt" if not bool(batch.prompt_mask.any()) else "target"
            raise EditkitError(f"edit request {request.id}: the {part} has no tokens")
        positions = self._positions(batch.prompt_mask)
        lower = self.split.lower(batch) if self._fast is not False else None
        module_in, module_out = (lower.module_in, lower.module_out) if lower is not None else self.split.module_io(batch)
        last = int(last_prompt_positions(batch.prompt_mask)[0])
        placement = self.codebook.place(
            module_in[0, last], self._initial_value(module_out[0, last]), request.target.strip(), cfg.eps_init
        )
        value = self.codebook.values[placement.entry].clone().requires_grad_(True)
        with torch.enable_grad(), frozen(self.model):
            loss_fn = self._loss_fn(batch, positions, lower, value)
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

    def _loss_fn(self, batch: PromptBatch, positions: torch.Tensor, lower: Any, value: torch.Tensor) -> Callable[[], torch.Tensor]:
        """The training loss: through the shortcut when it is (or, on the first edit, proves) exact."""
        labels = batch.target_labels()
        rows, cols = torch.nonzero(labels != -100, as_tuple=True)
        targets = labels[rows, cols]
        replacement = (torch.zeros(1, dtype=torch.long, device=self.device), positions, value[None])

        def full_logits() -> torch.Tensor:
            with self._replacing(lambda _acts: replacement):
                logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            return logits[rows, cols]

        def short_logits() -> torch.Tensor:
            change = torch.where(positions[..., None], value.to(lower.module_out.dtype) - lower.module_out, 0)
            hidden = lower.block_out + change.to(lower.block_out.dtype)
            return self.split.upper_logits(hidden, batch.attention_mask, batch.position_ids, rows, cols)

        if lower is not None and self._fast is None:
            with torch.no_grad():
                try:
                    self._fast = logits_match(short_logits(), full_logits())
                except Exception:  # a decoder that cannot be driven from inputs_embeds this way
                    self._fast = False
        logits = short_logits if self._fast and lower is not None else full_logits
        return lambda: F.cross_entropy(logits().float(), targets)

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
        self.last_routing = {}

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
        self.last_routing = {"entry": entry, "margin": margin, "active": active}
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
    def _replacing(self, decide: Callable[[torch.Tensor], Replacement]) -> Iterator[None]:
        """Inside the block, the first call of the module (the prefill) is changed as ``decide`` says; the
        replaced positions are prompt positions, so decode steps (which only add new tokens) are left alone."""
        calls: list[int] = []

        def hook(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            calls.append(1)
            if len(calls) > 1:
                return None
            return _replace(output, decide(args[0]))

        handle = self.split.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def routing(self, batch: PromptBatch) -> Iterator[None]:
        if len(self.codebook) == 0:
            yield
            return
        prompt_mask = batch.prompt_mask.to(self.device)

        def decide(acts: torch.Tensor) -> Replacement:
            if tuple(acts.shape[:2]) != tuple(prompt_mask.shape):
                raise EditkitError(
                    f"GRACE routing: the first forward pass has shape {tuple(acts.shape[:2])}, but the batch "
                    f"it routes is {tuple(prompt_mask.shape)}"
                )
            return self._decide(acts, prompt_mask)

        with self._replacing(decide):
            yield

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.codebook.state()

    def state_metadata(self) -> dict[str, Any]:
        return {"module": self.module_path, "edits": self.num_edits, "labels": list(self.codebook.labels)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        metadata = metadata or {}
        if set(tensors) != {"keys", "values", "radii"}:
            raise EditkitError(f"GRACE state must hold keys, values and radii, not {sorted(tensors)}")
        module = metadata.get("module", self.module_path)
        if module != self.module_path:
            raise EditkitError(f"GRACE state wraps '{module}', but this editor wraps '{self.module_path}'")
        labels = metadata.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise EditkitError("GRACE state has no list of key labels")
        try:
            self.codebook.load(tensors, labels)
        except ValueError as exc:
            raise EditkitError(f"GRACE state: {exc}") from None
        self.num_edits = int(metadata.get("edits", len(labels)))
