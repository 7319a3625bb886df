"""Interference protection: a new edit's update stays orthogonal to what earlier edits' tokens read.

An earlier edit ``j`` reads ``W_m·(m_j ⊙ a)`` at each of its tokens. A new edit with mask ``m`` changes only
the columns ``m`` of ``W_m``, so it changes what edit ``j`` reads by ``ΔW[:, m]·(m_j ⊙ a)[m]``. Keeping the
rows of ``ΔW[:, m]`` orthogonal to every earlier key restricted to ``m`` makes that zero: the null-space
projection of AlphaEdit, applied per column set. One covariance ``C = Σ (m_j ⊙ a)(m_j ⊙ a)ᵀ`` over every
earlier edit's tokens serves every later mask, since its ``m × m`` block is the covariance of the earlier
keys inside that column set.

Not every direction of that block can be protected once many edits share the columns; as in AlphaEdit,
directions whose eigenvalue is below ``tol`` times the largest are treated as free (earlier keys have almost
no energy there), and the new edit trains in them.
"""

from __future__ import annotations

import torch


class KeyCovariance:
    """``C`` [D, D] float64 of earlier edits' masked keys, and the protected basis of a column set."""

    def __init__(self, width: int, tol: float, device: torch.device | str | None = None):
        self.width, self.tol = width, tol
        self.matrix = torch.zeros(width, width, dtype=torch.float64, device=device)

    def clear(self) -> None:
        self.matrix.zero_()

    def add(self, keys: torch.Tensor) -> None:
        """Add the outer products of ``keys`` [n, D] (an edit's masked down-projection inputs, one per token)."""
        keys = keys.detach().to(self.matrix.device, torch.float64)
        self.matrix += keys.T @ keys

    def protected(self, channels: torch.Tensor) -> torch.Tensor | None:
        """[k, r] float32 orthonormal basis of the directions earlier keys use inside ``channels``, or None
        when none do (the first edit, or a column set no earlier edit touched)."""
        channels = channels.to(self.matrix.device)
        block = self.matrix.index_select(0, channels).index_select(1, channels)
        values, vectors = torch.linalg.eigh(block)
        top = float(values[-1]) if values.numel() else 0.0
        if not top > 0:
            return None
        used = values > self.tol * top
        return vectors[:, used].float()

    @staticmethod
    def free_share(keys: torch.Tensor, protected: torch.Tensor | None) -> float:
        """Share of the new edit's key energy (``keys`` [n, k] inside its columns) outside the protected
        directions: how much room the projection leaves the edit (1.0 when nothing is protected)."""
        total = float(keys.double().pow(2).sum())
        if protected is None or not total > 0:
            return 1.0
        inside = float((keys.double() @ protected.double().to(keys.device)).pow(2).sum())
        return max(0.0, 1.0 - inside / total)

    def load(self, matrix: torch.Tensor) -> None:
        if tuple(matrix.shape) != (self.width, self.width) or not torch.isfinite(matrix).all():
            raise ValueError(f"key_covariance must be a finite [{self.width}, {self.width}] matrix, not {tuple(matrix.shape)}")
        self.matrix = matrix.to(self.matrix.device, torch.float64).clone()
