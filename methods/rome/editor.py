"""ROME (Meng et al., 2022): a rank-one update of one MLP output projection per edit.

With ``k*`` the request's key (averaged over context templates) and ``v*`` its optimised value at the
projection's output, ROME writes ``W ← W + (v* − W k) uᵀ / (uᵀ k)`` with ``u = C⁻¹ k*`` (normalised) and
``k`` the key of the plain prompt: the edited projection maps ``k`` exactly to ``v*`` and changes least
along the directions generic text uses (``C`` large). ROME edits one fact at a time: a batch step is
applied one request after another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch

from editkit.errors import ConfigError
from editkit.requests import EditRequest

from editkit.locate import LocateConfig, LocateEditor
from editkit.locate.values import read_at_subject


@dataclass
class ROMEConfig(LocateConfig):
    """EasyEdit ``hparams/ROME/llama3-8b.yaml`` (layer 5 of 32, scaled), with ``mom2_adjustment`` on as in
    the paper (that file turns it off, which makes ROME's update ``C``-free; ``--set rome.mom2_adjustment=false``)."""

    # the v* options are LocateConfig's (the same values in EasyEdit's ROME and MEMIT LLaMA files)
    context_template_length_params: list[list[int]] = field(default_factory=lambda: [[5, 10], [10, 10]])

    easyedit_alg_names: ClassVar[tuple[str, ...]] = ("ROME",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers is not None and len(set(self.layers)) != 1:
            raise ConfigError(f"ROME edits one layer; layers must hold one index, not {self.layers}")


class ROMEEditor(LocateEditor):
    config_class = ROMEConfig
    official_layers: ClassVar[tuple[int, ...]] = (5,)

    def value_module(self) -> str:
        return self.weight_paths[0]

    def update(self, requests: Sequence[EditRequest], values: torch.Tensor) -> None:
        (path,) = self.weight_paths
        for request, value in zip(requests, values):
            key = self.keys([request], [path])[path][0]
            u = torch.linalg.solve(self.mom2[path], key) if self.mom2 else key.clone()
            u = u / u.norm()
            texts, subjects = [request.prompt], [request.subject]
            k = read_at_subject(self.model, self.tokenizer, texts, subjects, [path], "input")[path][0].double()
            current = read_at_subject(self.model, self.tokenizer, texts, subjects, [path], "output")[path][0].double()
            right = (value.double() - current) / (k @ u)
            self.add_to_weight(path, torch.outer(right, u))
