"""A subject check for the re-ranking router: does the query ask about the edit's subject?

The pooled feature of a prompt is mostly its relation words: CounterFact's locality prompts ask the edit's
own relation about another subject ("Hermann Goepfert worked in the city of" beside the edit "Kurt
Hessenberg worked in"), and their cosine with the edit's feature is as high as a rephrase's. What tells
them apart is the part of the feature the subject contributes. Each edit measures it when it is made: its
prompt with the subject replaced by each of a fixed list of stand-in names (:data:`SWAP_SUBJECTS`) gives
the relation without the subject; their mean ``r_j`` is stored, and the unit direction ``s_j`` from ``r_j``
to the edit's own feature ``f_j``. A query ``q`` routed to edit ``j`` has the *subject contrast*
``cos(q − r_j, s_j)``: high when what ``q`` adds to the bare relation points the way the edit's subject
does (a rephrase or a sibling question about the same subject), near zero for another subject. The swapped
prompts come from the request alone, never from a scored prompt.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from editkit.requests import EditRequest, check_subjects

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
    """Per stored mask, in database row order: ``r_j`` (the mean feature of the swapped prompts) and the
    unit direction ``s_j`` from ``r_j`` to the edit's own feature."""

    def __init__(self, width: int):
        self.width = width
        self.relations = torch.zeros(0, width)
        self.directions = torch.zeros(0, width)

    def __len__(self) -> int:
        return self.relations.shape[0]

    def clear(self) -> None:
        self.relations, self.directions = torch.zeros(0, self.width), torch.zeros(0, self.width)

    def add(self, own: torch.Tensor, swapped: torch.Tensor) -> None:
        """``own`` [D] the edit prompt's pooled feature, ``swapped`` [n, D] its swapped prompts'."""
        relation = torch.nan_to_num(swapped.detach().float().cpu()).mean(dim=0, keepdim=True)
        direction = F.normalize(torch.nan_to_num(own.detach().float().cpu()).reshape(1, -1) - relation, dim=1)
        self.relations = torch.cat([self.relations, relation])
        self.directions = torch.cat([self.directions, direction])

    def contrast(self, rows: np.ndarray, queries: torch.Tensor) -> np.ndarray:
        """``cos(q − r_j, s_j)`` of each query [Q, D] with the row ``rows[q]`` it was routed to (−1 where the
        row is −1, i.e. nothing was chosen)."""
        out = np.full(len(rows), -1.0)
        chosen = np.flatnonzero(rows >= 0)
        if chosen.size:
            index = torch.from_numpy(rows[chosen])
            residual = queries.detach().float().cpu()[torch.from_numpy(chosen)] - self.relations[index]
            out[chosen] = (F.normalize(residual, dim=1) * self.directions[index]).sum(dim=1).double().numpy()
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {"subject_relations": self.relations, "subject_directions": self.directions}

    def load(self, tensors: dict[str, torch.Tensor], stored: int) -> None:
        relations, directions = tensors["subject_relations"], tensors["subject_directions"]
        for name, matrix in (("subject_relations", relations), ("subject_directions", directions)):
            if matrix.dim() != 2 or tuple(matrix.shape) != (stored, self.width) or not torch.isfinite(matrix).all():
                raise ValueError(f"{name} must be a finite [{stored}, {self.width}] matrix, not {tuple(matrix.shape)}")
        self.relations = relations.detach().float().cpu().clone()
        self.directions = directions.detach().float().cpu().clone()


def check_swappable(requests: Sequence[EditRequest], method: str) -> None:
    """The subject check swaps each request's subject, so each prompt must contain it: refused before the
    first edit, with the record named."""
    check_subjects(requests, f"{method} with subject_swaps > 0 (--set subject_swaps=0 turns the check off)")
