"""When edits are scored during a sequential run.

The schedule is part of every stored number because the same method scores very differently under
``final`` (all edits, then score: the protocol of the lifelong-editing papers) and ``immediate`` (score each edit right after
it: what EasyEdit reports since 2026-06).
"""

from __future__ import annotations

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

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        text = text.strip().lower()
        if text in {"final", "immediate"}:
            return cls(text)
        if text.startswith("every:"):
            try:
                k = int(text.split(":", 1)[1])
            except ValueError:
                k = 0
            if k >= 1:
                return cls("every", k)
        raise EditkitError(f"unknown schedule '{text}'; use final, immediate or every:K (K >= 1)")

    def __str__(self) -> str:
        return f"every:{self.every}" if self.kind == "every" else self.kind

    def plan(self, n: int) -> list[Checkpoint]:
        """Every checkpoint of a stream of ``n`` edits.

        ``every:K`` scores all edits applied so far and always the whole stream's locality set, so the
        points of a forgetting curve are measured on the same locality pairs; its last checkpoint is ``n``
        even when K does not divide it, and equals the ``final`` schedule's scores.
        """
        everything = tuple(range(n))
        if self.kind == "final":
            return [Checkpoint(n, everything, everything)]
        if self.kind == "immediate":
            return [Checkpoint(i + 1, (i,), (i,)) for i in range(n)]
        steps = list(range(self.every, n + 1, self.every))
        if not steps or steps[-1] != n:
            steps.append(n)
        return [Checkpoint(s, tuple(range(s)), everything) for s in steps]
