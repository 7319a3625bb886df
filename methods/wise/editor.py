"""WISE-like editor: a side copy of one FFN down-projection, and a router that picks main or side memory.

The side memory starts as a copy of the main weights ``W`` and is kept as its difference ``D`` from them
(the side output is ``W·a + D·a``). Each edit trains ``D`` on the request and its context-prefixed copies
under a random gradient mask (one mask per shard of ``shard_size`` edits, so shards write different
subspaces), with cross-entropy on the target plus the routing margins: the activation gap
``‖σ(W·a + D·a) − σ(W·a)‖`` (mean over the prompt tokens) must exceed β on the edit prompts, stay below α
on an irrelevant text and exceed the latter by γ. ``D`` is clamped to ``±norm_constraint`` after each
step. Finished shards are merged with TIES every ``merge_every`` edits (WISE-Merge), or each kept as its own
side memory (WISE-Retrieve). At inference a row uses the side memory — for every position, decode steps
included — when its prompt's gap reaches ``act_ratio`` × the smallest gap seen on an edit prompt, and the
main memory (the untouched model, bit for bit) otherwise.

Speed: the side memory's change joins the residual stream at block ``L``'s output, so block ``L`` and
below run once per edit, each step runs the blocks above it with the LM head at the target positions, and
the irrelevant text (which only enters the margins) never goes above block ``L`` (:mod:`editkit.partial`).
The module, the split forward, the fast-path check, the routing hook and the state's module check come from
:class:`~editkit.tier.ModuleEditor`; this file is the side memory's maths.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from editkit.batching import PromptBatch, encode
from editkit.editor import RoutingScores
from editkit.errors import EditkitError
from editkit.layers import capture, ffn_activation
from editkit.partial import PackedRows, frozen
from editkit.prefixes import context_prefixes, prefixed
from editkit.requests import EditRequest
from editkit.tier import FULL, PACKED, ModuleEditor, target_positions

from .config import OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS, WiseConfig
from .merge import ties_merge

#: rows that use a side memory and, for each, the [out, in] difference from the main weights to apply
SideRoute = Optional[Tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] mean of ``values`` [B, T] over each row's ``mask`` positions (0 for a row with none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _hinge_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of the positive entries (0 when none is positive): each margin term only pushes where it fails."""
    positive = values[values > 0]
    return positive.mean() if positive.numel() else values.sum() * 0


class WiseEditor(ModuleEditor):
    """Side memory + activation-gap routing; the base weights are never touched."""

    config_class = WiseConfig
    official_layer: ClassVar[tuple[int, int]] = (OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS)
    #: WISE-Retrieve with one edit per shard: several side memories, so choosing among them is tested too
    conformance_variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {"retrieve": {"retrieve": True, "shard_size": 1}}

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: WiseConfig | None = None):
        super().__init__(model, tokenizer, config)
        self.shape = (self.split.out_features, self.split.in_features)
        #: the FFN's own activation (from the module, not a config key), for the routing gap
        self.activation: Callable[[torch.Tensor], torch.Tensor] = ffn_activation(model, self.module_path)
        self._prefixes: list[str] | None = None
        self.reset()

    def reset(self) -> None:
        zeros = lambda: torch.zeros(self.shape, device=self.device)  # noqa: E731
        self.base = zeros()  # merged shards (WISE-Merge), relative to W
        self.current = zeros()  # the shard in training, relative to W + base
        self.shards: list[torch.Tensor] = []  # finished shards not merged yet (Retrieve: every finished shard)
        self.min_gaps: list[float] = []  # smallest edit-prompt gap per side memory (one memory for Merge)
        self.num_edits = 0
        self._mask: torch.Tensor | None = None
        self._side_cache: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ memories
    def side_memories(self) -> list[torch.Tensor]:
        """The [out, in] differences from ``W`` that inference can choose from (cached until the next edit)."""
        if self._side_cache is None:
            live = [self.current] if self.num_edits % self.config.shard_size else []  # a shard in progress
            pending = [*self.shards, *live]
            if self.num_edits == 0:
                self._side_cache = []
            elif self.config.retrieve:
                self._side_cache = [self.base + d for d in pending]
            elif self.shards:
                self._side_cache = [self.base + ties_merge(pending, self.config.merge_density)]
            else:
                self._side_cache = [self.base + self.current]
        return self._side_cache

    def _gradient_mask(self) -> torch.Tensor:
        """The current shard's random mask (density ``mask_ratio``), drawn from the seed and the shard."""
        if self._mask is None:
            shard = self.num_edits // self.config.shard_size
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + shard)
            self._mask = (torch.rand(self.shape, generator=generator) < self.config.mask_ratio).to(self.device)
        return self._mask

    def _gap(self, module_out: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """[B, T] per-token activation gap between the side memory (output + ``change``) and the main one."""
        main = module_out.float()
        return torch.linalg.vector_norm(self.activation(main + change) - self.activation(main), dim=-1)

    # ------------------------------------------------------------------ editing
    def edit(self, request: EditRequest) -> dict[str, Any]:
        start = time.perf_counter()
        cfg: WiseConfig = self.config
        if self._prefixes is None:
            self._prefixes = context_prefixes(self.model, self.tokenizer)
        prompts = prefixed(request.prompt, self._prefixes[: cfg.num_prefixes])
        batch = self.training_batch(request, prompts)
        negative = None
        if request.irrelevant and request.irrelevant.strip():
            neg_batch = encode(self.tokenizer, [request.irrelevant], device=self.device)
            neg_in, neg_out = self.split.module_io(neg_batch)
            negative = (neg_in, neg_out, neg_batch.attention_mask.bool())
        trained = self.current.clone().requires_grad_(True)
        with torch.enable_grad(), frozen(self.model):
            loss_fn, loop = self._loss_fn(batch, negative, trained)
            iterations, losses = self._train(loss_fn, trained)
        self.current = trained.detach()
        with torch.no_grad():
            acts, out = self.split.module_io(batch.rows([0]))
            change = F.linear(acts.float(), self.base + self.current)
            gap = float(_masked_mean(self._gap(out, change), batch.prompt_mask[:1])[0])
        memory = len(self.shards) if cfg.retrieve else 0
        if memory == len(self.min_gaps):
            self.min_gaps.append(gap)
        else:
            self.min_gaps[memory] = min(self.min_gaps[memory], gap)
        self.num_edits += 1
        self._end_of_shard()
        self._side_cache = None
        return {"iterations": iterations, "seconds": time.perf_counter() - start, "edit_gap": gap, **losses, "loop": loop}

    def _end_of_shard(self) -> None:
        """Close a finished shard (new mask, fresh delta) and merge when a merge is due."""
        cfg: WiseConfig = self.config
        if self.num_edits % cfg.shard_size:
            return
        self.shards.append(self.current)
        self.current = torch.zeros_like(self.current)
        self._mask = None
        if not cfg.retrieve and self.num_edits % cfg.merge_every == 0:
            self.base = self.base + ties_merge(self.shards, cfg.merge_density)
            self.shards = []

    def _loss_fn(
        self, batch: PromptBatch, negative: Any, trained: torch.Tensor
    ) -> tuple[Callable[[], dict[str, torch.Tensor]], str]:
        """Cross-entropy on the targets plus the routing margins, as one closure over the cached parts, and
        the loop it runs."""
        cfg: WiseConfig = self.config
        rows, cols, targets = target_positions(batch)
        lower = self.split.lower(batch) if self.fast_path.usable else None
        layout = PackedRows.of(batch)
        captured: dict[str, torch.Tensor] = {}  # the module's output and the side memory's change to it

        def full_logits(delta: torch.Tensor) -> torch.Tensor:
            def change(acts: torch.Tensor, output: torch.Tensor, _call: int) -> torch.Tensor:
                captured["out"], captured["change"] = capture(output), F.linear(acts.float(), delta)
                return output + captured["change"].to(output.dtype)

            with self.hooked(change):
                logits = self.model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids, use_cache=False,
                ).logits
            return logits[rows, cols]

        def short_logits(delta: torch.Tensor) -> torch.Tensor:
            captured["out"], captured["change"] = lower.module_out, F.linear(lower.module_in.float(), delta)
            packed, change = layout.pack_lower(lower), layout.pack(captured["change"])
            return self.shortcut_logits(batch, packed, change, None, layout.position_ids, torch.zeros_like(rows), layout.index[rows, cols])

        loop = FULL
        if lower is not None:  # the one-off check runs with a random non-zero side memory
            probe = None
            if not self.fast_path.checked:
                noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(1234)).to(self.device)
                probe = self.base + noise * 0.05
            loop = self.fast_path.choose(lambda: full_logits(probe), {PACKED: lambda: short_logits(probe)})
        logits_of = short_logits if loop == PACKED else full_logits

        def loss() -> dict[str, torch.Tensor]:
            delta = self.base + trained
            ce = F.cross_entropy(logits_of(delta).float(), targets)
            edit_gap = _masked_mean(self._gap(captured["out"], captured["change"]), batch.prompt_mask)
            margin = _hinge_mean(cfg.beta - edit_gap)
            if negative is not None:
                neg_in, neg_out, neg_mask = negative
                neg_gap = _masked_mean(self._gap(neg_out, F.linear(neg_in.float(), delta)), neg_mask)
                margin = margin + _hinge_mean(neg_gap - cfg.alpha) + _hinge_mean(neg_gap[:, None] - edit_gap[None, :] + cfg.gamma)
            return {"loss": ce + margin, "ce_loss": ce, "margin_loss": margin}

        return loss, loop

    def _train(self, loss_fn: Callable[[], dict[str, torch.Tensor]], trained: torch.Tensor) -> tuple[int, dict[str, float]]:
        """Masked SGD on the shard's delta, clamped so that ``W + D`` stays within ``W ± norm_constraint``."""
        cfg: WiseConfig = self.config
        mask = self._gradient_mask()
        bound = cfg.norm_constraint
        iterations, values, previous = 0, {}, None
        for _ in range(cfg.n_iter):
            terms = loss_fn()
            values = {name: float(t.detach()) for name, t in terms.items()}
            loss = values["loss"]
            if previous is not None and loss <= cfg.early_stop_loss and abs(previous - loss) <= cfg.early_stop_delta:
                break
            previous = loss
            trained.grad = None
            terms["loss"].backward()
            with torch.no_grad():
                trained.add_(trained.grad * mask, alpha=-cfg.lr)
                trained.copy_((self.base + trained).clamp(-bound, bound) - self.base)
            iterations += 1
        trained.grad = None
        return iterations, values

    # ---------------------------------------------------------------- routing
    def _gaps(self, acts: torch.Tensor, output: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per row: the most activated side memory, its gap over the prompt and that memory's threshold. The
        one place gaps are compared, so routing and :meth:`routing_scores` can never disagree."""
        memories = self.side_memories()
        gaps = torch.stack(
            [_masked_mean(self._gap(output, F.linear(acts.float(), d)), prompt_mask) for d in memories], dim=1
        )
        thresholds = torch.tensor(self.min_gaps[: len(memories)], device=gaps.device) * self.config.act_ratio
        best_gap, choice = gaps.max(dim=1)
        return choice, best_gap, thresholds[choice]

    def _decide(self, acts: torch.Tensor, output: torch.Tensor, prompt_mask: torch.Tensor) -> SideRoute:
        """The side memory for the rows whose gap reaches their memory's threshold."""
        choice, gap, threshold = self._gaps(acts, output, prompt_mask)
        active = prompt_mask.any(dim=1) & (gap >= threshold)
        if not bool(active.any()):
            return None
        rows = torch.nonzero(active).flatten()
        return rows, self.side_memories(), choice[rows]

    @torch.no_grad()
    def routing_scores(self, batch: PromptBatch) -> RoutingScores:
        """The activation gap (one side memory: against ``act_ratio`` × the smallest edit gap) or, with
        several side memories (WISE-Retrieve), the gap over its memory's threshold against 1."""
        batch = batch.to(self.device)
        if self.num_edits == 0:
            return RoutingScores([0.0] * len(batch), 1.0, "activation gap / threshold")
        acts, output = self.split.module_io(batch)
        _, gap, threshold = self._gaps(acts, output, batch.prompt_mask)
        no_prompt = ~batch.prompt_mask.any(dim=1)
        if len(self.side_memories()) == 1:
            return RoutingScores(torch.where(no_prompt, -1.0, gap), float(threshold[0]), "activation gap")
        return RoutingScores(torch.where(no_prompt, -1.0, gap / threshold), 1.0, "activation gap / threshold")

    @contextmanager
    def routing(self, batch: PromptBatch) -> Iterator[None]:
        if self.num_edits == 0:
            yield
            return
        with self.routed(batch, self._decide, _apply_side):
            yield

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        tensors = {"base": self.base, "current": self.current}
        tensors.update({f"shard_{i}": shard for i, shard in enumerate(self.shards)})
        return tensors

    def state_metadata(self) -> dict[str, Any]:
        return {
            **super().state_metadata(),
            "edits": self.num_edits,
            "shards": len(self.shards),
            "min_gaps": list(self.min_gaps),
        }

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        metadata = metadata or {}
        shards = int(metadata.get("shards", 0))
        expected = {"base", "current", *(f"shard_{i}" for i in range(shards))}
        if set(tensors) != expected:
            raise EditkitError(f"WISE state must hold {sorted(expected)}, not {sorted(tensors)}")
        self.check_state_module(metadata)
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != self.shape:
                raise EditkitError(f"WISE state tensor '{name}' is {tuple(tensor.shape)}, expected {self.shape}")
        self.reset()
        load = lambda name: tensors[name].to(self.device, torch.float32)  # noqa: E731
        self.base, self.current = load("base"), load("current")
        self.shards = [load(f"shard_{i}") for i in range(shards)]
        self.min_gaps = [float(g) for g in metadata.get("min_gaps", [])]
        self.num_edits = int(metadata.get("edits", 0))


def _apply_side(route: SideRoute, acts: torch.Tensor, output: torch.Tensor, _prefill: bool) -> torch.Tensor | None:
    """The routed rows' output plus their side memory's change, at every position (decode steps included)."""
    if route is None:
        return None
    rows, memories, choice = route
    result = output.clone()
    for memory in choice.unique().tolist():
        selected = rows[choice == memory]
        change = F.linear(acts.index_select(0, selected).float(), memories[memory]).to(output.dtype)
        result.index_add_(0, selected, change)
    return result
