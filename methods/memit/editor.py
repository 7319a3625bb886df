"""MEMIT (Meng et al., 2023): a batch of edits spread over a range of MLP output projections.

v* is placed on the residual stream after the last edited block (``z*``). Going up the layers, each one takes
its share of what is still missing there, ``R = (z* − z) / (layers left)``, and solves the least-squares
problem that maps the batch's keys ``K`` to it while keeping generic keys in place:
``ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹`` with ``λ = mom2_update_weight`` (MEMIT Eq. 14). ``z`` is re-read after each
layer's update, so a later layer only adds what the earlier ones did not achieve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from editkit.requests import EditRequest

from editkit.locate import LocateConfig, LocateEditor
from editkit.locate.values import read_at_subject


#: EasyEdit's MEMIT LLaMA-7B λ and that model's MLP width (the keys' dimension)
OFFICIAL_MOM2_WEIGHT, OFFICIAL_MLP_WIDTH = 15000.0, 11008


@dataclass
class MEMITConfig(LocateConfig):
    """EasyEdit ``hparams/MEMIT/llama-7b.yaml`` (layers 4-8 of 32, scaled), with MEMIT's own context
    templates (five of ten tokens): LocateConfig's defaults are exactly these."""

    easyedit_alg_names: ClassVar[tuple[str, ...]] = ("MEMIT",)


class MEMITEditor(LocateEditor):
    config_class = MEMITConfig
    official_layers: ClassVar[tuple[int, ...]] = (4, 5, 6, 7, 8)
    batch_edits: ClassVar[bool] = True

    def value_module(self) -> str:
        return f"{self.blocks_path}.{self.layers[-1]}"

    def residual_now(self, requests: Sequence[EditRequest]) -> torch.Tensor:
        """[n, d] residual stream after the last edited block, at each plain prompt's subject."""
        texts, subjects = [r.prompt for r in requests], [r.subject for r in requests]
        module = self.value_module()
        return read_at_subject(self.model, self.tokenizer, texts, subjects, [module], "output")[module].double()

    def update(self, requests: Sequence[EditRequest], values: torch.Tensor) -> None:
        targets = values.double()
        for i, path in enumerate(self.weight_paths):
            keys = self.keys(requests, [path])[path].T  # [d_in, n]
            residual = (targets - self.residual_now(requests)).T / (len(self.weight_paths) - i)  # [d, n]
            self.add_to_weight(path, self.solve(i, path, keys, residual))
        self.after_update(requests)

    def solve(self, index: int, path: str, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """ΔW [d_out, d_in] of layer ``index`` for keys [d_in, n] and residuals [d_out, n]."""
        preserved = self.mom2_weight(keys.shape[0]) * self.mom2[path] if self.mom2 else torch.zeros_like(keys @ keys.T)
        adjusted = torch.linalg.solve(preserved + keys @ keys.T, keys)  # [d_in, n]
        return residual @ adjusted.T

    def mom2_weight(self, width: int) -> float:
        """λ: the configured one, or the official 15000 scaled from LLaMA-7B's MLP width to ``width``."""
        cfg: MEMITConfig = self.config
        if cfg.mom2_update_weight is not None:
            return cfg.mom2_update_weight
        return OFFICIAL_MOM2_WEIGHT * width / OFFICIAL_MLP_WIDTH

    def after_update(self, requests: Sequence[EditRequest]) -> None:
        """Hook after every layer of a batch is updated (AlphaEdit accumulates the batch's keys)."""
