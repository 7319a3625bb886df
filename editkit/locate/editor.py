"""The locate-then-edit editor: subjects, keys, v* and statistics; the update rule is the method's.

ROME, MEMIT and AlphaEdit all (1) find the edited MLP output projections (``layers`` of the model), (2) key
each request by the projections' input at the subject's last token, averaged over context templates, (3)
optimise a target value v* for it, and (4) solve for a weight update that maps the keys to the values
while disturbing the keys of generic text (the second moments ``C``) as little as possible. Steps 1-3 and
the preparation (templates and ``C`` from the *unedited* model) live here; a method supplies
:meth:`value_module` (where v* is placed) and :meth:`update` (step 4).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Any, ClassVar, Sequence

import torch

from editkit.errors import EditkitError
from editkit.layers import block_list_path, down_proj_path, num_layers
from editkit.partial import SplitForward
from editkit.requests import EditRequest, check_subjects
from editkit.tier import WeightEditor

from .config import LocateConfig
from .stats import model_fingerprint, second_moments
from .subjects import context_templates
from .values import ValueLoop, ValueOptions, optimise_value, template_keys

#: depth of the LLaMA models the official layer numbers refer to
OFFICIAL_NUM_LAYERS = 32


def scaled_layers(official: Sequence[int], model: torch.nn.Module) -> list[int]:
    """The official layers of a 32-layer LLaMA at the same relative depth of ``model`` (distinct, sorted)."""
    n = num_layers(model)
    return sorted({min(n - 1, max(0, round(layer * n / OFFICIAL_NUM_LAYERS))) for layer in official})


class LocateEditor(WeightEditor):
    """Base of ROME, MEMIT and AlphaEdit."""

    config_class = LocateConfig
    #: checked for the whole stream before the first edit (the subject's occurrence in the prompt too,
    #: by :meth:`check_requests`)
    required_fields: ClassVar[tuple[str, ...]] = ("subject",)
    #: the official layers (of a 32-layer LLaMA), used when ``config.layers`` is None
    official_layers: ClassVar[tuple[int, ...]] = ()

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: LocateConfig | None = None):
        super().__init__(model, tokenizer, config)
        cfg: LocateConfig = self.config
        self.layers = sorted(set(cfg.layers)) if cfg.layers is not None else scaled_layers(self.official_layers, model)
        if cfg.module_template is not None:
            paths = [cfg.module_template.format(layer) for layer in self.layers]
        else:
            paths = [down_proj_path(model, layer) for layer in self.layers]
        self.edit_weights(paths)
        self.blocks_path = block_list_path(model)
        # v* is optimised at the output of the last edited projection or of its block (the method says
        # which); the loop through the blocks above it is checked once against the full forward
        self.value_loop = ValueLoop(model, self.value_module(), SplitForward(model, self.weight_paths[-1]), self)
        self.fingerprint = model_fingerprint(model)  # of the unedited weights: the statistics' cache key
        self.templates: list[list[str]] | None = None
        self.mom2: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------ preparation
    def check_requests(self, requests: Sequence[EditRequest]) -> None:
        check_subjects(requests, self.name)

    def prepare(self, unrelated_texts: Sequence[str]) -> None:
        self._ready()

    def _ready(self) -> None:
        """Context templates and second moments, from the unedited model (before the first change)."""
        if self.templates is not None:
            return
        if self.num_edits:
            raise EditkitError(f"{self.name}: preparation must come before the first edit")
        cfg: LocateConfig = self.config
        with torch.random.fork_rng(devices=[]):
            self.templates = context_templates(self.model, self.tokenizer, cfg.context_template_length_params, cfg.seed)
        if cfg.mom2_adjustment:
            moments = second_moments(self.model, self.tokenizer, self.weight_paths, cfg.mom2_samples, self.fingerprint)
            self.mom2 = {path: m.to(self.device, torch.float64) for path, m in moments.items()}
        self.prepared_from_moments()

    def prepared_from_moments(self) -> None:
        """Hook for what a method derives from ``self.mom2`` once (AlphaEdit's projections)."""

    # ----------------------------------------------------------------- editing
    def edit(self, request: EditRequest) -> dict[str, Any]:
        return self.apply([request])[0]

    def edit_batch(self, requests: Sequence[EditRequest]) -> list[dict[str, Any]]:
        if not self.batch_edits:
            return super().edit_batch(requests)
        return self.apply(requests)

    def apply(self, requests: Sequence[EditRequest]) -> list[dict[str, Any]]:
        """v* for each request, then the method's joint update of every edited weight."""
        check_subjects(requests, self.name)
        self._ready()
        cfg: LocateConfig = self.config
        options = ValueOptions(cfg.v_num_grad_steps, cfg.v_lr, cfg.v_weight_decay, cfg.clamp_norm_factor, cfg.kl_factor)
        flat = [t for group in self.templates or [] for t in group]
        stats, values = [], []
        for request in requests:
            start = time.perf_counter()
            value, info = optimise_value(self.model, self.tokenizer, request, flat, self.value_loop, options)
            values.append(value)
            stats.append({**info, "v_seconds": time.perf_counter() - start})
        start = time.perf_counter()
        self.update(requests, torch.stack(values))
        update_seconds = time.perf_counter() - start
        self.num_edits += len(requests)
        for s in stats:
            s["update_seconds"] = update_seconds
            s["seconds"] = s["v_seconds"] + update_seconds / len(requests)
            if len(requests) > 1:
                s["batch"] = len(requests)
        return stats

    def keys(self, requests: Sequence[EditRequest], paths: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{path: [n, d_in]}`` keys of the requests at the edited modules, under the current weights."""
        assert self.templates is not None
        return {p: k.double() for p, k in template_keys(self.model, self.tokenizer, requests, self.templates, paths).items()}

    @abstractmethod
    def value_module(self) -> str:
        """The module whose output v* is optimised at: the last edited projection or the block holding it
        (elsewhere, v* runs the full forward, announced once)."""

    @abstractmethod
    def update(self, requests: Sequence[EditRequest], values: torch.Tensor) -> None:
        """Change the edited weights so that the requests' keys map to ``values`` ([n, d], float32)."""

    # ------------------------------------------------------------------- state
    def before_loading_state(self) -> None:
        self._ready()  # templates and statistics come from the unedited weights, so before loading
