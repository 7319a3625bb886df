"""The unit of work every editor, loader and scorer agrees on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import EditkitError


@dataclass(frozen=True)
class EditRequest:
    """One factual edit: make ``prompt`` continue with ``target``.

    Sequences are tuples so that a request can never be mutated after the stream hash was taken.
    ``locality`` holds ``(prompt, answer)`` pairs unrelated to the edit whose behaviour must not change.
    ``portability`` holds ``(question, answer)`` pairs whose answer follows from the edit by one more hop
    (ZsRE's "New Question"/"New Answer"): scored like reliability, they show whether the edit is *used*.
    ``irrelevant`` is an unrelated text some methods train against as a negative; loaders fill it from
    another record's locality pair (never the request's own), so it is fixed by the stream, not the method.
    """

    id: str
    prompt: str
    target: str
    rephrases: tuple[str, ...] = ()
    locality: tuple[tuple[str, str], ...] = ()
    subject: str | None = None
    irrelevant: str | None = None
    portability: tuple[tuple[str, str], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples, so equality and hashing behave.
        object.__setattr__(self, "rephrases", tuple(self.rephrases))
        object.__setattr__(self, "locality", tuple((str(p), str(a)) for p, a in self.locality))
        object.__setattr__(self, "portability", tuple((str(q), str(a)) for q, a in self.portability))

    def to_json(self) -> dict[str, Any]:
        """The editkit JSONL schema (the inverse of the ``editkit`` loader)."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "target": self.target,
            "rephrases": list(self.rephrases),
            "locality": [{"prompt": p, "answer": a} for p, a in self.locality],
            "subject": self.subject,
            "irrelevant": self.irrelevant,
            **({"portability": [{"prompt": q, "answer": a} for q, a in self.portability]} if self.portability else {}),
            "meta": dict(self.meta),
        }


def check_subjects(requests: Sequence[EditRequest], method: str) -> None:
    """Every request must carry a subject that occurs in its prompt; refuse the stream otherwise (the
    locate-then-edit methods key an edit by the subject's last token; MEMOIR's subject check swaps it)."""
    for request in requests:
        if not request.subject or not request.subject.strip():
            raise EditkitError(f"edit request {request.id}: {method} needs the request's subject (field 'subject'), and this record has none")
        if request.subject not in request.prompt:
            raise EditkitError(f"edit request {request.id}: subject '{request.subject}' does not occur in its prompt '{request.prompt}' ({method} needs it there)")
