"""GRACE's codebook: keys (layer inputs of edited prompts), trained values, a radius per key, labels.

The radius rules are what make GRACE a lifelong editor rather than a cache: a new edit whose key falls
near an existing key with the same answer widens that key's radius to cover it (its value is then trained
further on the new prompt); near a key with a different answer, both radii shrink to half the distance so
the two never overlap; anywhere else a new key is added with the initial radius.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    """Where an edit goes: the entry whose value is trained, and what happened to the codebook."""

    entry: int
    action: str  # "add" | "expand" | "split"


class Codebook:
    """Keys [N, D], values [N, H] and radii [N] in float32, labels [N]; values are trained one at a time by
    the editor, on a copy, so the codebook itself never carries gradients."""

    def __init__(self, key_dim: int, value_dim: int, device: torch.device):
        self.key_dim, self.value_dim, self.device = key_dim, value_dim, device
        self.clear()

    def clear(self) -> None:
        self.keys = torch.zeros(0, self.key_dim, device=self.device)
        self.values = torch.zeros(0, self.value_dim, device=self.device)
        self.radii = torch.zeros(0, device=self.device)
        self.labels: list[str] = []

    def __len__(self) -> int:
        return len(self.labels)

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index and Euclidean distance of each query's nearest key ([B] each); needs a non-empty codebook."""
        distances = torch.cdist(queries.float()[None], self.keys[None])[0]
        best, index = distances.min(dim=1)
        return index, best

    def place(self, key: torch.Tensor, value: torch.Tensor, label: str, eps_init: float) -> Placement:
        """Apply the add / expand / split rule for a new edit (``key`` [D], initial ``value`` [H])."""
        key = key.float()
        if len(self):
            index, distance = (t.item() for t in self.nearest(key[None]))
            index = int(index)
            if distance <= self.radii[index].item() + eps_init:
                if self.labels[index] == label:
                    self.radii[index] = max(self.radii[index].item(), distance)
                    return Placement(index, "expand")
                self._append(key, value, label, distance / 2)
                self.radii[index] = distance / 2 - 1e-5  # the older key gives way, so the two never touch
                return Placement(len(self) - 1, "split")
        self._append(key, value, label, eps_init)
        return Placement(len(self) - 1, "add")

    def _append(self, key: torch.Tensor, value: torch.Tensor, label: str, radius: float) -> None:
        self.keys = torch.cat([self.keys, key[None]])
        self.values = torch.cat([self.values, value.detach().float()[None].to(self.device)])
        self.radii = torch.cat([self.radii, torch.tensor([radius], device=self.device)])
        self.labels.append(label)

    def state(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys, "values": self.values, "radii": self.radii}

    def load(self, tensors: dict[str, torch.Tensor], labels: list[str]) -> None:
        keys, values, radii = tensors["keys"], tensors["values"], tensors["radii"]
        n = len(labels)
        if keys.shape != (n, self.key_dim) or values.shape != (n, self.value_dim) or radii.shape != (n,):
            raise ValueError(
                f"codebook of {n} labels needs keys {(n, self.key_dim)}, values {(n, self.value_dim)} and "
                f"radii {(n,)}; got {tuple(keys.shape)}, {tuple(values.shape)} and {tuple(radii.shape)}"
            )
        self.keys = keys.to(self.device, torch.float32)
        self.values = values.to(self.device, torch.float32)
        self.radii = radii.to(self.device, torch.float32)
        self.labels = list(labels)
