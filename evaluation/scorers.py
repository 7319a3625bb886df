"""The two scorers of the protocol, one implementation for every method.

Both see the editor only through ``Editor.logits`` / ``Editor.generate`` on batches that carry each row's
prompt boundary, so a method's routing is exercised exactly as at inference and it cannot change how it
is scored. Locality compares the edited model with the *unedited* model's predictions, computed once per
stream before any edit (:meth:`Scorer.prepare`) and in the same batches as at scoring time, so the
unedited model scores exactly 1.0 and a difference is a real change, not floating-point noise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from editkit.batching import encode, tokenize_pair
from editkit.editor import Editor
from editkit.errors import EditkitError
from editkit.requests import EditRequest

Pair = tuple[str, str]
METRICS = ("reliability", "generalization", "locality")


@dataclass(frozen=True)
class Score:
    """One scored item, averaged over the request's rephrases or locality pairs where it has several."""

    step: int
    edit_id: str
    metric: str
    scorer: str
    value: float


class Scorer(ABC):
    name: str = ""
    #: what the scorer measures, in a few words (table captions and figure titles)
    description: str = ""

    def __init__(self, tokenizer, batch_size: int = 16, progress: Callable[[Iterable], Iterable] | None = None):
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress or (lambda it: it)
        self._reference: dict[tuple[Pair, ...], list[torch.Tensor]] = {}

    # ------------------------------------------------------------ per-scorer primitives
    @abstractmethod
    def target_scores(self, editor: Editor, pairs: Sequence[Pair]) -> list[float]:
        """Score in [0, 1] of each (prompt, target) pair under the editor."""

    @abstractmethod
    def locality_outputs(self, editor: Editor, pairs: Sequence[Pair]) -> list[torch.Tensor]:
        """What locality compares for each (prompt, answer) pair: predicted token ids."""

    @staticmethod
    @abstractmethod
    def locality_value(output: torch.Tensor, reference: torch.Tensor) -> float:
        """Agreement in [0, 1] of an edited output with the unedited one."""

    # ------------------------------------------------------------ shared protocol
    def batches(self, pairs: Sequence[Pair]) -> Iterable[list[int]]:
        """Index batches in a deterministic order (by length, to keep padding small)."""
        order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]) + len(pairs[i][1]), i))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def prepare(self, unedited: Editor, stream: Sequence[EditRequest], groups: Iterable[Sequence[int]]) -> None:
        """Cache the unedited model's locality outputs for every group of requests a schedule will score."""
        for group in groups:
            pairs = _locality_pairs(stream, group)
            key = tuple(p for p, _ in pairs)
            if key not in self._reference:
                self._reference[key] = self.locality_outputs(unedited, key)

    def score(
        self, editor: Editor, stream: Sequence[EditRequest], step: int, edits: Sequence[int], locality: Sequence[int]
    ) -> list[Score]:
        rows: list[Score] = []
        requests = [stream[i] for i in edits]
        reliability = self.target_scores(editor, [(r.prompt, r.target) for r in requests])
        rows += [Score(step, r.id, "reliability", self.name, v) for r, v in zip(requests, reliability)]

        rephrased = [(r, q) for r in requests for q in r.rephrases]
        values = self.target_scores(editor, [(q, r.target) for r, q in rephrased])
        rows += self._per_request(step, "generalization", [r.id for r, _ in rephrased], values)

        pairs = _locality_pairs(stream, locality)
        key = tuple(p for p, _ in pairs)
        if key not in self._reference:
            raise EditkitError(f"scorer '{self.name}': prepare() was not run for this locality set")
        outputs = self.locality_outputs(editor, key)
        values = [self.locality_value(o, ref) for o, ref in zip(outputs, self._reference[key])]
        rows += self._per_request(step, "locality", [owner for _, owner in pairs], values)
        return rows

    def _per_request(self, step: int, metric: str, owners: Sequence[str], values: Sequence[float]) -> list[Score]:
        """Average a request's several rephrases / locality pairs into one value, keeping stream order."""
        sums: dict[str, list[float]] = {}
        for owner, value in zip(owners, values):
            sums.setdefault(owner, []).append(value)
        return [Score(step, owner, metric, self.name, sum(v) / len(v)) for owner, v in sums.items()]


def _locality_pairs(stream: Sequence[EditRequest], indices: Sequence[int]) -> list[tuple[Pair, str]]:
    return [(pair, stream[i].id) for i in indices for pair in stream[i].locality]


class TeacherForcedScorer(Scorer):
    """EasyEdit-compatible token accuracy: feed ``prompt + " " + target``, argmax at each target position."""

    name = "tf"
    description = "teacher-forced token accuracy"

    def _argmax_at_targets(self, editor: Editor, pairs: Sequence[Pair]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(predicted ids, gold ids) over the target positions of each pair."""
        out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(pairs)
        for idx in self.progress(list(self.batches(pairs))):
            batch = encode(self.tokenizer, [pairs[i][0] for i in idx], [pairs[i][1] for i in idx], "right")
            predicted = editor.logits(batch).argmax(dim=-1).cpu()
            wanted, gold = batch.prediction_mask(), batch.target_mask
            for row, i in enumerate(idx):
                out[i] = (predicted[row][wanted[row]], batch.input_ids[row][gold[row]])
        return out  # type: ignore[return-value]

    def target_scores(self, editor: Editor, pairs: Sequence[Pair]) -> list[float]:
        return [(p == g).float().mean().item() for p, g in self._argmax_at_targets(editor, pairs)]

    def locality_outputs(self, editor: Editor, pairs: Sequence[Pair]) -> list[torch.Tensor]:
        return [p for p, _ in self._argmax_at_targets(editor, pairs)]

    @staticmethod
    def locality_value(output: torch.Tensor, reference: torch.Tensor) -> float:
        return (output == reference).float().mean().item()


class GenerationScorer(Scorer):
    """Greedy decoding from the prompt alone, as many tokens as the target has; all must match."""

    name = "gen"
    description = "generation exact match"

    def _continuations(self, editor: Editor, pairs: Sequence[Pair]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(generated ids, gold target ids) of each pair, generated for exactly len(gold) tokens."""
        gold = [torch.tensor(tokenize_pair(self.tokenizer, p, t)[1], dtype=torch.long) for p, t in pairs]
        out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(pairs)
        for idx in self.progress(list(self.batches(pairs))):
            batch = encode(self.tokenizer, [pairs[i][0] for i in idx], None, "left")
            generated = editor.generate(batch, max(len(gold[i]) for i in idx)).cpu()
            for row, i in enumerate(idx):
                out[i] = (generated[row, : len(gold[i])], gold[i])
        return out  # type: ignore[return-value]

    def target_scores(self, editor: Editor, pairs: Sequence[Pair]) -> list[float]:
        return [float(torch.equal(g, t)) for g, t in self._continuations(editor, pairs)]

    def locality_outputs(self, editor: Editor, pairs: Sequence[Pair]) -> list[torch.Tensor]:
        return [g for g, _ in self._continuations(editor, pairs)]

    @staticmethod
    def locality_value(output: torch.Tensor, reference: torch.Tensor) -> float:
        return float(torch.equal(output, reference))


SCORERS: dict[str, type[Scorer]] = {s.name: s for s in (TeacherForcedScorer, GenerationScorer)}


def parse_scorers(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCORERS]
    if unknown or not names:
        raise EditkitError(f"unknown scorer '{','.join(unknown) or text}'; known scorers: {', '.join(SCORERS)}")
    return list(dict.fromkeys(names))
