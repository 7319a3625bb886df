"""A subject check for the re-ranking router: is the query closer to the edit than to its bare relation?

The pooled feature of a prompt is mostly its relation words: CounterFact's locality prompts ask the edit's
own relation about another subject ("Hermann Goepfert worked in the city of" beside the edit "Kurt
Hessenberg worked in"), and their cosine with the edit's feature is as high as a rephrase's. What tells
them apart is the part of the feature the subject contributes. Each edit measures it when it is made: its
prompt with the subject replaced by each of a fixed list of stand-in names (:data:`SWAP_SUBJECTS`) gives
the relation without the subject, and the mean of those features, ``r_j``, is stored beside the edit's own
feature ``f_j``. A query ``q`` routed to edit ``j`` passes the check when ``cos(q, f_j) − cos(q, r_j)`` is
at least a margin: a rephrase or a sibling question shares the subject and is closer to ``f_j``; a prompt
about another subject is as close to the bare relation, or closer. The margin is never more than half the
edit's own gap ``1 − cos(f_j, r_j)``, so the edit prompt itself always passes. The swapped prompts come
from the request alone, never from a scored prompt.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from editkit.requests import EditRequest, check_subjects

from .rerank import check_rows

#: stand-in subjects of several kinds (people, places, organisations, things): a swapped prompt keeps the
#: relation words and loses the subject, whatever the relation's usual subject type
SWAP_SUBJECTS = (
    "John Smith", "Maria Garcia", "Tokyo", "Microsoft", "the Eiffel Tower", "Albert Brown", "Sweden", "Toyota",
    "Pierre Dubois", "Yuki Tanaka", "Nairobi", "the Beatles", "Ahmed Hassan", "Oxford University", "Brazil", "Nokia",
    "Vienna",
)


def swapped_prompts(request: EditRequest, count: int) -> list[str]:
    """The request's prompt with its subject (every occurrence) replaced by each of the first ``count``
    stand-ins that differ from it."""
    subject = request.subject or ""
    names = [name for name in SWAP_SUBJECTS if name != subject][:count]
    return [request.prompt.replace(subject, name) for name in names]


class SubjectTable:
    """Per stored mask, in database row order: the unit mean feature ``r_j`` of the edit's swapped prompts,
    and the edit's gap ``1 − cos(f_j, r_j)``."""

    def __init__(self, width: int):
        self.width = width
        self.relations = torch.zeros(0, width)
        self.gaps = torch.zeros(0)

    def __len__(self) -> int:
        return self.relations.shape[0]

    def clear(self) -> None:
        self.relations, self.gaps = torch.zeros(0, self.width), torch.zeros(0)

    def add(self, own: torch.Tensor, swapped: torch.Tensor) -> None:
        """``own`` [D] the edit prompt's pooled feature, ``swapped`` [n, D] its swapped prompts'."""
        relation = F.normalize(torch.nan_to_num(swapped.detach().float().cpu()).mean(dim=0, keepdim=True), dim=1)
        unit = F.normalize(torch.nan_to_num(own.detach().float().cpu()).reshape(1, -1), dim=1)
        self.relations = torch.cat([self.relations, relation])
        self.gaps = torch.cat([self.gaps, 1 - (unit * relation).sum(dim=1)])

    def margins(self, rows: np.ndarray, queries: torch.Tensor, cosines: np.ndarray, margin: float) -> np.ndarray:
        """For each query [Q, D] routed to ``rows[q]`` with feature cosine ``cosines[q]``: how far
        ``cos(q, f_j) − cos(q, r_j)`` is above the edit's margin (``min(margin, gap_j / 2)``); −1 where the
        row is −1 (nothing was chosen)."""
        out = np.full(len(rows), -1.0)
        chosen = np.flatnonzero(rows >= 0)
        if chosen.size:
            index = torch.from_numpy(rows[chosen])
            units = F.normalize(queries.detach().float().cpu()[torch.from_numpy(chosen)], dim=1)
            to_relation = (units * self.relations[index]).sum(dim=1).double().numpy()
            needed = np.minimum(margin, self.gaps[index].double().numpy() / 2)
            out[chosen] = cosines[chosen] - to_relation - needed
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {"subject_relations": self.relations, "subject_gaps": self.gaps}

    def load(self, tensors: dict[str, torch.Tensor], stored: int) -> None:
        relations, gaps = tensors["subject_relations"], tensors["subject_gaps"]
        check_rows("subject_relations", relations, stored, self.width)
        if tuple(gaps.shape) != (stored,) or not torch.isfinite(gaps).all():
            raise ValueError(f"subject_gaps must be {stored} finite numbers, not {tuple(gaps.shape)}")
        self.relations = relations.detach().float().cpu().clone()
        self.gaps = gaps.detach().float().cpu().clone()


def check_swappable(requests: Sequence[EditRequest], method: str) -> None:
    """The subject check swaps each request's subject, so each prompt must contain it: refused before the
    first edit, with the record named."""
    check_subjects(requests, f"{method} with subject_swaps > 0 (--set subject_swaps=0 turns the check off)")
