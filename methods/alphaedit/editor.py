"""AlphaEdit (Fang et al., ICLR 2025): MEMIT's update projected onto the null space of preserved knowledge.

``P`` projects onto the eigenvectors of the preserved keys' second moments ``C`` whose eigenvalues are below
a threshold: an update ``ΔW P`` leaves the outputs of generic keys (almost) unchanged, so a long
stream of edits does not erode the rest of the model. Over the stream AlphaEdit also accumulates the keys
of all earlier edits, ``K_p K_pᵀ``, and solves (its Eq. 8)

    ΔW = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + L2 · I)⁻¹

so a new edit disturbs the earlier ones as little as possible. ``P`` is fixed (from the unedited model);
``K_p K_pᵀ`` grows by the batch's keys, re-read after the batch's update, after every step, and is part of
the saved state.

The threshold: the paper's is absolute (``nullspace_threshold: 2e-2`` for every model, on ``C`` of LLaMA-3-8B,
GPT-J, GPT2-XL), which only means something at those models' activation scale (on a random test model no
eigenvalue is that small, and the null space would be empty). Scaled to the model, the default is relative:
eigenvalues below ``nullspace_relative`` × the mean eigenvalue of that layer's ``C``. On the default model
(SmolLM2-135M, layers 4 and 8) the mean eigenvalue is 1.4e-2 and 3.0e-2, so the default 1.0 lands within
1.5x of the paper's 2e-2 (see docs/tuning/alphaedit.md); an EasyEdit file's ``nullspace_threshold`` (or
``--set alphaedit.nullspace_threshold=2e-2``) sets the absolute threshold instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from editkit.checks import is_number
from editkit.easyedit import KeyTable
from editkit.errors import ConfigError, EditkitError
from editkit.requests import EditRequest

from ..memit.editor import MEMITConfig, MEMITEditor

CACHE_PREFIX = "edited_keys:"
#: the official L2 of AlphaEdit's LLaMA-3-8B file and that model's MLP width. ``L2 · I`` is weighed against a
#: key's ``K Kᵀ``, whose trace grows with the width at a given activation scale, so L2 is scaled by
#: width / 14336 when None (1.07 for the default model's 1536)
OFFICIAL_L2, OFFICIAL_MLP_WIDTH = 10.0, 14336


@dataclass
class AlphaEditConfig(MEMITConfig):
    """EasyEdit ``hparams/AlphaEdit/llama3-8b.yaml`` (layers 4-8 of 32, scaled), except ``v_lr``: that
    file's 0.1 leaves v* unfitted on the default model in its 25 steps (final NLL 1.1-6.0 on zsre-dev),
    AlphaEdit's own GPT-2 XL / GPT-J files use 0.5 with the same clamp, and with 0.5 v* fits (NLL .02-.22)
    (docs/tuning/alphaedit.md)."""

    clamp_norm_factor: float = 0.75
    v_lr: float = 0.5  # AlphaEdit's GPT-2 XL / GPT-J value; the LLaMA-3-8B file's 0.1 does not fit v* here
    v_weight_decay: float = 0.5
    nullspace_threshold: float | None = None  # absolute (the paper's 2e-2); None: nullspace_relative
    nullspace_relative: float = 1.0  # x the mean eigenvalue of C, when nullspace_threshold is None
    L2: float | None = None  # None: the official 10 (LLaMA-3-8B, MLP width 14336) x this MLP's width / 14336

    easyedit_alg_names: ClassVar[tuple[str, ...]] = ("ALPHAEDIT",)
    easyedit_keys: ClassVar[KeyTable] = {**MEMITConfig.easyedit_keys, "nullspace_threshold": "nullspace_threshold", "L2": "L2"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nullspace_threshold is not None and not (is_number(self.nullspace_threshold) and self.nullspace_threshold > 0):
            raise ConfigError(f"AlphaEdit nullspace_threshold must be None or a number > 0, not {self.nullspace_threshold!r}")
        if not (is_number(self.nullspace_relative) and self.nullspace_relative > 0):
            raise ConfigError(f"AlphaEdit nullspace_relative must be a number > 0, not {self.nullspace_relative!r}")
        if self.L2 is not None and not (is_number(self.L2) and self.L2 >= 0):
            raise ConfigError(f"AlphaEdit L2 must be None or a number >= 0, not {self.L2!r}")
        if not self.mom2_adjustment:
            raise ConfigError("AlphaEdit needs the second moments (its null space comes from them); mom2_adjustment must stay true")


class AlphaEditEditor(MEMITEditor):
    config_class = AlphaEditConfig

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: AlphaEditConfig | None = None):
        super().__init__(model, tokenizer, config)
        self.projections: dict[str, torch.Tensor] = {}
        self.null_dims: dict[str, int] = {}
        self.edited_keys: dict[str, torch.Tensor] = {}

    def prepared_from_moments(self) -> None:
        cfg: AlphaEditConfig = self.config
        for path, moments in self.mom2.items():
            eigenvalues, vectors = torch.linalg.eigh(moments)
            null = vectors[:, eigenvalues < self.threshold(eigenvalues)]
            self.projections[path] = null @ null.T
            self.null_dims[path] = int(null.shape[1])
        self.reset_extra()

    def threshold(self, eigenvalues: torch.Tensor) -> float:
        cfg: AlphaEditConfig = self.config
        if cfg.nullspace_threshold is not None:
            return cfg.nullspace_threshold
        return cfg.nullspace_relative * float(eigenvalues.mean())

    def solve(self, index: int, path: str, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        cfg: AlphaEditConfig = self.config
        projection = self.projections[path]
        if self.null_dims[path] == 0:
            raise EditkitError(
                f"alphaedit: the null space of {path} is empty (no eigenvalue of its second moments is below "
                f"the threshold); every update would be zero. Raise nullspace_threshold or nullspace_relative with --set"
            )
        identity = torch.eye(keys.shape[0], dtype=keys.dtype, device=keys.device)
        l2 = cfg.L2 if cfg.L2 is not None else OFFICIAL_L2 * keys.shape[0] / OFFICIAL_MLP_WIDTH
        system = projection @ (keys @ keys.T + self.edited_keys[path]) + l2 * identity
        return torch.linalg.solve(system, projection @ keys @ residual.T).T

    def after_update(self, requests: Sequence[EditRequest]) -> None:
        keys = self.keys(requests, self.weight_paths)
        for path in self.weight_paths:
            self.edited_keys[path] = self.edited_keys[path] + keys[path].T @ keys[path]

    def apply(self, requests: Sequence[EditRequest]) -> list[dict[str, Any]]:
        stats = super().apply(requests)
        for s in stats:
            s["null_space_dims"] = min(self.null_dims.values())
        return stats

    # ------------------------------------------------------------------- state
    def reset_extra(self) -> None:
        self.edited_keys = {p: torch.zeros_like(m) for p, m in self.mom2.items()}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {CACHE_PREFIX + p: k for p, k in self.edited_keys.items()}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        keys = {k[len(CACHE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CACHE_PREFIX)}
        if set(tensors) != {CACHE_PREFIX + p for p in keys} or set(keys) != set(self.weight_paths):
            raise EditkitError(f"AlphaEdit state must hold the edited keys of {self.weight_paths}, not {sorted(tensors)}")
        self.edited_keys = {p: v.to(self.device, torch.float64) for p, v in keys.items()}
