"""A second routing check: the best few masks are re-ranked by the cosine of pooled features.

TopHash overlap finds the subject but not always the question: sibling questions about one subject, and
same-relation prompts about another subject, pick many of the same top channels. The overlap is a count
of shared bits of two binarised k-of-D sets; the pooled activation the mask came from keeps the values, so
the cosine of two pooled features separates prompts the masks cannot. Each stored mask keeps the feature
of the edit prompt that first wrote it (one D-vector per mask, float32).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: a row with no candidate scores its overlap / k minus this: below every cosine, and below every margin
#: of the subject check (``min(cos − rerank_tau, subject margin)``, clipped at −2)
NO_CANDIDATE = 3.0


def check_rows(name: str, matrix: torch.Tensor, stored: int, width: int) -> None:
    """A saved per-mask table must be a finite [stored, width] matrix (``ValueError`` naming it otherwise)."""
    if matrix.dim() != 2 or tuple(matrix.shape) != (stored, width) or not torch.isfinite(matrix).all():
        raise ValueError(f"{name} must be a finite [{stored}, {width}] matrix, not {tuple(matrix.shape)}")


class FeatureTable:
    """The unit-normalised pooled feature of every stored mask, in database row order."""

    def __init__(self, width: int):
        self.width = width
        self.matrix = torch.zeros(0, width)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def clear(self) -> None:
        self.matrix = torch.zeros(0, self.width)

    def add(self, feature: torch.Tensor) -> None:
        unit = F.normalize(torch.nan_to_num(feature.detach().float().cpu()).reshape(1, -1), dim=1)
        self.matrix = torch.cat([self.matrix, unit])

    def rerank(
        self, overlaps: np.ndarray, queries: torch.Tensor, min_overlap: float, candidates: int, k: int,
        shortlists: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each query ([Q, N] overlap counts, [Q, D] pooled features): the chosen row, its score, and
        whether it had a candidate.

        Candidates are the ``candidates`` rows of largest overlap (earliest first on ties) with an overlap
        ≥ ``min_overlap``; the chosen one has the largest cosine, which is the score. Without a candidate,
        the row is the best-overlapping one and the score ``overlap / k − NO_CANDIDATE``. ``shortlists``,
        when given, receives each query's candidate rows and their cosines (empty without a candidate),
        for checks that look past the chosen one (:func:`.subjects.rival_leads`)."""
        count, stored = overlaps.shape
        if stored != len(self):
            raise ValueError(f"{stored} stored masks but {len(self)} stored features")
        rows = np.full(count, -1, dtype=np.int64)
        scores = np.full(count, -NO_CANDIDATE, dtype=np.float64)
        found = np.zeros(count, dtype=bool)
        if stored == 0:
            if shortlists is not None:
                shortlists += [(np.zeros(0, np.int64), np.zeros(0))] * count
            return rows, scores, found
        order = np.argsort(-overlaps.astype(np.int64), axis=1, kind="stable")[:, :candidates]
        units = F.normalize(queries.detach().float().cpu(), dim=1)
        for q in range(count):
            shortlist = order[q][overlaps[q, order[q]] >= min_overlap]
            cosines = (self.matrix[torch.from_numpy(shortlist)] @ units[q]).double().numpy() if shortlist.size else np.zeros(0)
            if shortlists is not None:
                shortlists.append((shortlist, cosines))
            if shortlist.size == 0:
                rows[q] = order[q, 0]
                scores[q] = overlaps[q, rows[q]] / k - NO_CANDIDATE
                continue
            best = int(np.argmax(cosines))  # the first (best-overlapping) on ties
            rows[q], scores[q], found[q] = shortlist[best], float(cosines[best]), True
        return rows, scores, found

    def load(self, matrix: torch.Tensor, stored: int) -> None:
        check_rows("features", matrix, stored, self.width)
        self.matrix = matrix.detach().float().cpu().clone()
