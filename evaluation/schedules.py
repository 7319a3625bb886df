"""When edits are scored during a sequential run.

The schedule is part of every stored number because the same method scores very differently under
``final`` (all edits, then score: the protocol of the lifelong-editing papers) and ``immediate`` (score each edit right after
it: what EasyEdit reports since 2026-06).

A long stream (thousands of edits) scored in full at every checkpoint of a forgetting curve costs more
than the edits themselves on a CPU, so ``every:K,sample:S`` scores a fixed, evenly spaced sample of S of the
stream's requests (always including the first): the same requests for every method and every checkpoint,
and the sample size is in the schedule string stored with every number.

``edits-per-step:B`` (``--edits-per-step B``) applies the stream B requests at a time (``Editor.edit_batch``,
the protocol of the null-space editing papers: 100 edits x 20 steps); it is part of the schedule string, so it is stored with every
number and named in every caption. Scoring happens only between steps, so ``every:K`` needs K a multiple of
B, and ``immediate`` scores each step's edits right after that step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from editkit.errors import EditkitError


@dataclass(frozen=True)
class Checkpoint:
    """After ``step`` edits: score these requests' edits and the locality pairs of ``locality``."""

    step: int
    edits: tuple[int, ...]
    locality: tuple[int, ...]


@dataclass(frozen=True)
class Schedule:
    kind: str  # "final" | "immediate" | "every"
    every: int | None = None
    #: score only this many evenly spaced requests of the stream (None: all of them)
    sample: int | None = None
    #: requests applied together in one edit step (``Editor.edit_batch``); 1 = one edit per step
    per_step: int = 1

    def __post_init__(self) -> None:
        if self.per_step < 1:
            raise EditkitError(f"--edits-per-step must be at least 1, got {self.per_step}")
        if self.kind == "every" and self.every is not None and self.every % self.per_step:
            raise EditkitError(
                f"schedule every:{self.every} scores between edit steps of {self.per_step} requests; "
                f"use a K that is a multiple of --edits-per-step {self.per_step}"
            )

    @classmethod
    def parse(cls, text: str, per_step: int = 1) -> "Schedule":
        """A schedule string; a trailing ``,edits-per-step:B`` (as :meth:`__str__` writes it) sets B."""
        text = text.strip().lower()
        batched = re.fullmatch(r"(.*),edits-per-step:(\d+)", text)
        if batched:
            text, per_step = batched.group(1), int(batched.group(2))
        if text in {"final", "immediate"}:
            return cls(text, per_step=per_step)
        match = re.fullmatch(r"every:(\d+)(?:,sample:(\d+))?", text)
        if match and int(match.group(1)) >= 1 and (match.group(2) is None or int(match.group(2)) >= 1):
            return cls("every", int(match.group(1)), int(match.group(2)) if match.group(2) else None, per_step)
        raise EditkitError(
            f"unknown schedule '{text}'; use final, immediate, every:K or every:K,sample:S (K, S >= 1)"
        )

    def __str__(self) -> str:
        steps = f",edits-per-step:{self.per_step}" if self.per_step > 1 else ""
        if self.kind != "every":
            return self.kind + steps
        return f"every:{self.every}" + (f",sample:{self.sample}" if self.sample else "") + steps

    def steps(self, n: int) -> list[range]:
        """The stream's indices grouped into edit steps of ``per_step`` requests (the last may be shorter)."""
        return [range(i, min(i + self.per_step, n)) for i in range(0, n, self.per_step)]

    def scored(self, n: int) -> tuple[int, ...]:
        """The requests of a stream of ``n`` this schedule scores: all, or the evenly spaced sample."""
        if self.sample is None or self.sample >= n:
            return tuple(range(n))
        return tuple(sorted({(i * n) // self.sample for i in range(self.sample)}))

    def plan(self, n: int) -> list[Checkpoint]:
        """Every checkpoint of a stream of ``n`` edits.

        ``every:K`` scores all edits applied so far and always the whole stream's locality set, so the
        points of a forgetting curve are measured on the same locality pairs; its last checkpoint is ``n``
        even when K does not divide it, and equals the ``final`` schedule's scores. With a sample, "all
        edits" and "the whole stream" mean the sampled requests.
        """
        everything = self.scored(n)
        if self.kind == "final":
            return [Checkpoint(n, everything, everything)]
        if self.kind == "immediate":  # each step's edits, right after that step
            return [Checkpoint(step.stop, tuple(step), tuple(step)) for step in self.steps(n)]
        steps = list(range(self.every, n + 1, self.every))
        if not steps or steps[-1] != n:
            steps.append(n)
        return [Checkpoint(s, tuple(i for i in everything if i < s), everything) for s in steps]
