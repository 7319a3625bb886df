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

Calibrated per edit (``subject_calibrate``): the stand-ins are themselves prompts about another subject, so
how high one of them scores, ``cos(s_i, f_j) − cos(s_i, r_j^{−i})`` against the relation of the *other*
stand-ins, is how high a same-relation neighbour can score. The margin an edit asks of a query is raised
by its best stand-in's score (when positive): an edit whose bare relation already looks like the edit asks
more, one whose subject stands out asks only the margin.
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
    the edit's gap ``1 − cos(f_j, r_j)`` and, when ``calibrated``, its floor: the best stand-in's own score
    (leave-one-out, clipped at 0), added to the margin."""

    def __init__(self, width: int, calibrated: bool = False):
        self.width = width
        self.calibrated = calibrated
        self.clear()

    def __len__(self) -> int:
        return self.relations.shape[0]

    def clear(self) -> None:
        self.relations, self.gaps, self.floors = torch.zeros(0, self.width), torch.zeros(0), torch.zeros(0)

    def add(self, own: torch.Tensor, swapped: torch.Tensor) -> None:
        """``own`` [D] the edit prompt's pooled feature, ``swapped`` [n, D] its swapped prompts'."""
        swapped = torch.nan_to_num(swapped.detach().float().cpu())
        relation = F.normalize(swapped.mean(dim=0, keepdim=True), dim=1)
        unit = F.normalize(torch.nan_to_num(own.detach().float().cpu()).reshape(1, -1), dim=1)
        self.relations = torch.cat([self.relations, relation])
        self.gaps = torch.cat([self.gaps, 1 - (unit * relation).sum(dim=1)])
        if self.calibrated:
            self.floors = torch.cat([self.floors, stand_in_floor(unit[0], swapped).reshape(1)])

    def margins(self, rows: np.ndarray, queries: torch.Tensor, cosines: np.ndarray, margin: float) -> np.ndarray:
        """For each query [Q, D] routed to ``rows[q]`` with feature cosine ``cosines[q]``: how far
        ``cos(q, f_j) − cos(q, r_j)`` is above the edit's margin (``min(margin + floor_j, gap_j / 2)``, the
        floor 0 unless calibrated); −1 where the row is −1 (nothing was chosen)."""
        out = np.full(len(rows), -1.0)
        chosen = np.flatnonzero(rows >= 0)
        if chosen.size:
            index = torch.from_numpy(rows[chosen])
            units = F.normalize(queries.detach().float().cpu()[torch.from_numpy(chosen)], dim=1)
            to_relation = (units * self.relations[index]).sum(dim=1).double().numpy()
            asked = margin + (self.floors[index].double().numpy() if self.calibrated else 0.0)
            needed = np.minimum(asked, self.gaps[index].double().numpy() / 2)
            out[chosen] = cosines[chosen] - to_relation - needed
        return out

    def rival_leads(self, shortlists: Sequence[tuple[np.ndarray, np.ndarray]], rows: np.ndarray, features: torch.Tensor, same_subject: float) -> np.ndarray:
        """Per query: how far the chosen row's cosine ``rows[q]`` leads every other candidate of its
        shortlist that is about another subject; ``inf`` with no such candidate (or nothing chosen).

        A candidate's subject is the part of its feature its bare relation does not explain, the unit
        ``f_j − r_j`` (``features`` [N, D] are the stored unit ``f_j``); two candidates are about one subject
        when those parts have a cosine of at least ``same_subject`` (siblings of one subject: .56–.83 on the
        dev slices; other subjects: median .39). A rephrase leads the other subjects' edits by far; a prompt
        about a subject nobody edited sits among several same-relation edits at similar cosines."""
        out = np.full(len(rows), np.inf)
        for q, ((shortlist, cosines), row) in enumerate(zip(shortlists, rows)):
            if row < 0 or shortlist.size < 2:
                continue
            index = torch.from_numpy(shortlist)
            parts = F.normalize(features[index] - self.relations[index], dim=1)
            best = int(np.flatnonzero(shortlist == row)[0])
            same = (parts @ parts[best]).double().numpy() >= same_subject
            rivals = np.flatnonzero(~same)
            if rivals.size:
                out[q] = float(cosines[best] - cosines[rivals].max())
        return out

    def state(self) -> dict[str, torch.Tensor]:
        tensors = {"subject_relations": self.relations, "subject_gaps": self.gaps}
        return {**tensors, "subject_floors": self.floors} if self.calibrated else tensors

    @property
    def state_keys(self) -> set[str]:
        """The tensors :meth:`state` saves and :meth:`load` needs."""
        return set(self.state())

    def load(self, tensors: dict[str, torch.Tensor], stored: int) -> None:
        relations, gaps = tensors["subject_relations"], tensors["subject_gaps"]
        check_rows("subject_relations", relations, stored, self.width)
        for name in ("subject_gaps", "subject_floors") if self.calibrated else ("subject_gaps",):
            values = tensors[name]
            if tuple(values.shape) != (stored,) or not torch.isfinite(values).all():
                raise ValueError(f"{name} must be {stored} finite numbers, not {tuple(values.shape)}")
        self.relations = relations.detach().float().cpu().clone()
        self.gaps = gaps.detach().float().cpu().clone()
        if self.calibrated:
            self.floors = tensors["subject_floors"].detach().float().cpu().clone()


def stand_in_floor(unit: torch.Tensor, swapped: torch.Tensor) -> torch.Tensor:
    """The best score a stand-in gets against the edit (unit feature ``unit`` [D]) when the bare relation is
    the mean of the *other* stand-ins ([n, D] features, n ≥ 2), clipped at 0: what a prompt about another
    subject can score."""
    count = swapped.shape[0]
    others = F.normalize((swapped.sum(dim=0, keepdim=True) - swapped) / (count - 1), dim=1)
    units = F.normalize(swapped, dim=1)
    return ((units @ unit) - (units * others).sum(dim=1)).max().clamp(min=0)


def check_swappable(requests: Sequence[EditRequest], method: str) -> None:
    """The subject check swaps each request's subject, so each prompt must contain it: refused before the
    first edit, with the record named."""
    check_subjects(requests, f"{method} with subject_swaps > 0 (--set subject_swaps=0 turns the check off)")
