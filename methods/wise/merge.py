"""TIES merging of side-memory shards: trim each to its largest entries, elect a sign per entry, and
average only the shards that agree with it, so that edits trained in different subspaces do not cancel."""

from __future__ import annotations

from typing import Sequence

import torch


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """``delta`` with all but its ``density`` fraction of largest-magnitude entries set to zero."""
    keep = max(1, int(round(density * delta.numel())))
    if keep >= delta.numel():
        return delta.clone()
    threshold = delta.abs().flatten().kthvalue(delta.numel() - keep + 1).values
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def ties_merge(deltas: Sequence[torch.Tensor], density: float) -> torch.Tensor:
    """One delta from several: trim, elect the sign of the summed trimmed deltas, disjoint mean."""
    if not deltas:
        raise ValueError("nothing to merge")
    trimmed = torch.stack([trim(d, density) for d in deltas])
    elected = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
    count = agree.sum(dim=0).clamp(min=1)
    return (trimmed * agree).sum(dim=0) / count
