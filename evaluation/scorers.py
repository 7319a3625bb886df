"""The two scorers of the protocol, one implementation for every method.

Both see the editor only through ``Editor.logits`` / ``Editor.generate`` on batches that carry each row's
prompt boundary, so a method's routing is exercised exactly as at inference and it cannot change how it
is scored. Locality compares the edited model with the *unedited* model's predictions, computed once per
stream before any edit (:meth:`Scorer.prepare`) and in the same batches as at scoring time, so the
unedited model scores exactly 1.0 and a difference is a real change, not floating-point noise.

Three scorers: ``tf`` (teacher forcing, the papers' number), ``gen`` (greedy decoding of exactly the
target's length) and ``wild`` (free generation that stops by itself, judged as text, as in QAEdit's WILD
protocol). A scorer may report several *variants* of one pass (``wild`` also reports token F1 as
``wild-f1``, and an external judge as ``wild-judge``); each variant is a scorer name of its own in the rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
import importlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from editkit.batching import encode, tokenize_pair
from editkit.editor import Editor
from editkit.errors import EditkitError
from editkit.requests import EditRequest

from .answers import exact_match, first_line, first_line_done, token_f1
from .fluency import ngram_entropy

Pair = tuple[str, str]
METRICS = ("reliability", "generalization", "locality")
#: scored by every scorer for requests that carry one-hop questions; ``wild`` adds ``fluency``
PORTABILITY, FLUENCY = "portability", "fluency"
#: what an external judge is called with: (question, free answer, reference answer) -> score in [0, 1]
Judge = Callable[[str, str, str], float]


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

    def __init__(
        self,
        tokenizer,
        batch_size: int = 16,
        progress: Callable[[Iterable], Iterable] | None = None,
        options: Mapping[str, Any] | None = None,
    ):
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress or (lambda it: it)
        #: scorer settings from the command line (``judge``); a scorer reads the ones it knows
        self.options = dict(options or {})
        self._reference: dict[tuple[Pair, ...], list[Any]] = {}

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

    def target_values(self, editor: Editor, pairs: Sequence[Pair]) -> dict[str, list[float]]:
        """Scores of each pair under every variant this scorer reports (default: one, its own name)."""
        return {self.name: self.target_scores(editor, pairs)}

    def locality_values(self, pairs: Sequence[Pair], outputs: Sequence[Any], references: Sequence[Any]) -> dict[str, list[float]]:
        """Agreement of each edited locality output with the unedited one, per variant."""
        return {self.name: [self.locality_value(o, ref) for o, ref in zip(outputs, references)]}

    def extra_scores(self, editor: Editor, requests: Sequence[EditRequest], step: int) -> list["Score"]:
        """Rows of metrics beyond the protocol's (``wild``: fluency); none by default."""
        return []

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
        asked = {
            "reliability": [(r.id, r.prompt, r.target) for r in requests],
            "generalization": [(r.id, q, r.target) for r in requests for q in r.rephrases],
            PORTABILITY: [(r.id, q, a) for r in requests for q, a in r.portability],
        }
        for metric, items in asked.items():
            if items or metric != PORTABILITY:  # portability only for streams that carry one-hop questions
                values = self.target_values(editor, [(q, a) for _, q, a in items])
                rows += self._per_request(step, metric, [owner for owner, _, _ in items], values)

        pairs = _locality_pairs(stream, locality)
        key = tuple(p for p, _ in pairs)
        if key not in self._reference:
            raise EditkitError(f"scorer '{self.name}': prepare() was not run for this locality set")
        outputs = self.locality_outputs(editor, key)
        values = self.locality_values(key, outputs, self._reference[key])
        rows += self._per_request(step, "locality", [owner for _, owner in pairs], values)
        return rows + self.extra_scores(editor, requests, step)

    def _per_request(self, step: int, metric: str, owners: Sequence[str], variants: Mapping[str, Sequence[float]]) -> list[Score]:
        """Average a request's several rephrases / locality pairs into one value, keeping stream order."""
        rows = []
        for name, values in variants.items():
            sums: dict[str, list[float]] = {}
            for owner, value in zip(owners, values):
                sums.setdefault(owner, []).append(value)
            rows += [Score(step, owner, metric, name, sum(v) / len(v)) for owner, v in sums.items()]
        return rows


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


class WildScorer(Scorer):
    """Free generation judged as text (QAEdit's WILD protocol): greedy decoding from the prompt alone that
    stops by itself, at an end-of-sequence (any special token), at the end of the answer's line, or after
    ``max_new_tokens``; the answer and the target are normalised (case, punctuation, articles,
    whitespace) and compared by exact match (``wild``) and token F1 (``wild-f1``).

    Locality compares the edited model's free answer with the unedited model's own free answer, cached
    once per stream like the other scorers' references. ``fluency``: ROME's n-gram entropy of
    ``fluency_tokens`` greedily generated tokens from each edit prompt, a fixed length as ROME and KnowEdit
    generate them (not cut at a stop token: a model that stops at once would otherwise be scored on little
    more than its prompt, and texts of different lengths would be compared; special tokens are dropped
    from the text). With the ``judge`` option (a callable
    ``(question, answer, reference) -> [0, 1]``), its verdicts are reported as ``wild-judge``.

    Decoding is cut afterwards, at the same place for every row whatever the batch: greedy decoding does
    not look ahead, so the cut answer is exactly what a decoder that stopped there would have produced, and
    every row keeps the batching and per-row routing of :meth:`Editor.generate`. A batch stops decoding
    once all its rows are complete (``stop`` of :meth:`Editor.generate`), which changes no answer.
    """

    name = "wild"
    description = "free generation exact match"
    max_new_tokens = 32
    fluency_tokens = 100

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.judge: Judge | None = self.options.get("judge")
        self._stops = frozenset(getattr(self.tokenizer, "all_special_ids", None) or ()) | _eos_ids(self.tokenizer)

    def _generated(self, editor: Editor, prompts: Sequence[str], tokens: int, answer: bool = False, cut: bool = True) -> list[list[int]]:
        """The ids each prompt's free generation keeps: up to (not including) the first stop token.
        Decoding ends early once every row of a batch is complete: has a stop token, or (``answer``) has
        finished its answer's first line, which is all :meth:`answers` reads. ``cut=False``: all ``tokens``
        generated ids of every row, stop tokens or not (fluency's fixed length)."""
        out: list[list[int]] = [[] for _ in prompts]
        pairs = [(p, "") for p in prompts]
        stop = (lambda so_far: self._complete(so_far, answer)) if cut else None
        for idx in self.progress(list(self.batches(pairs))):
            batch = encode(self.tokenizer, [prompts[i] for i in idx], None, "left")
            generated = editor.generate(batch, tokens, stop=stop).cpu().tolist()
            for row, i in enumerate(idx):
                out[i] = self._kept(generated[row]) if cut else generated[row]
        return out

    def _kept(self, ids: list[int]) -> list[int]:
        return ids[: next((k for k, t in enumerate(ids) if t in self._stops), len(ids))]

    def _complete(self, so_far: torch.Tensor, answer: bool) -> torch.Tensor:
        """[B] bool: rows that more tokens cannot change, by the same cut that is applied afterwards."""
        rows = so_far.cpu().tolist()
        done = [
            len(kept) < len(ids) or (answer and first_line_done(self.tokenizer.decode(kept)))
            for ids, kept in ((ids, self._kept(ids)) for ids in rows)
        ]
        return torch.tensor(done, dtype=torch.bool)

    def answers(self, editor: Editor, prompts: Sequence[str]) -> list[str]:
        """Each prompt's free answer: the first line of its generation."""
        return [first_line(self.tokenizer.decode(ids)) for ids in self._generated(editor, prompts, self.max_new_tokens, answer=True)]

    def _judged(self, questions: Sequence[str], answers: Sequence[str], references: Sequence[str]) -> list[float]:
        values = []
        for q, a, ref in zip(questions, answers, references):
            value = self.judge(q, a, ref)  # type: ignore[misc]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 1):
                raise EditkitError(f"--judge {self.options.get('judge_name', self.judge)}: returned {value!r} for {q!r}, not a number in [0, 1]")
            values.append(float(value))
        return values

    def _variants(self, questions: Sequence[str], answers: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        variants = {
            self.name: [exact_match(a, r) for a, r in zip(answers, references)],
            f"{self.name}-f1": [token_f1(a, r) for a, r in zip(answers, references)],
        }
        if self.judge is not None:
            variants[f"{self.name}-judge"] = self._judged(questions, answers, references)
        return variants

    def target_values(self, editor: Editor, pairs: Sequence[Pair]) -> dict[str, list[float]]:
        questions = [q for q, _ in pairs]
        return self._variants(questions, self.answers(editor, questions), [t for _, t in pairs])

    def target_scores(self, editor: Editor, pairs: Sequence[Pair]) -> list[float]:
        return self.target_values(editor, pairs)[self.name]

    def locality_outputs(self, editor: Editor, pairs: Sequence[Pair]) -> list[str]:  # type: ignore[override]
        return self.answers(editor, [p for p, _ in pairs])

    @staticmethod
    def locality_value(output: str, reference: str) -> float:  # type: ignore[override]
        return exact_match(output, reference)

    def locality_values(self, pairs: Sequence[Pair], outputs: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        return self._variants([p for p, _ in pairs], outputs, references)

    def extra_scores(self, editor: Editor, requests: Sequence[EditRequest], step: int) -> list[Score]:
        prompts = [r.prompt for r in requests]
        texts = [
            self.tokenizer.decode(list(tokenize_pair(self.tokenizer, p, None)[0]) + ids, skip_special_tokens=True)
            for p, ids in zip(prompts, self._generated(editor, prompts, self.fluency_tokens, cut=False))
        ]
        return [Score(step, r.id, FLUENCY, self.name, ngram_entropy(t)) for r, t in zip(requests, texts)]


def _eos_ids(tokenizer: Any) -> frozenset[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return frozenset()
    return frozenset(eos if isinstance(eos, list) else [eos])


def load_judge(spec: str) -> Judge:
    """The callable named ``module:function`` (imported from the installed packages or the working
    directory); a judge that cannot be found stops the run before anything is written."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise EditkitError(f"--judge {spec}: expected MODULE:FUNCTION, e.g. my_judges:exact")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error of any kind in the user's module
        raise EditkitError(f"--judge {spec}: cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    judge = getattr(module, attribute, None)
    if not callable(judge):
        raise EditkitError(f"--judge {spec}: {module_name} has no callable '{attribute}'")
    return judge


SCORERS: dict[str, type[Scorer]] = {s.name: s for s in (TeacherForcedScorer, GenerationScorer, WildScorer)}
#: what each scorer name found in results means (a scorer's variants included), for captions
DESCRIPTIONS: dict[str, str] = {
    **{name: s.description for name, s in SCORERS.items()},
    "wild-f1": "free generation token F1",
    "wild-judge": "free generation, external judge",
}


def parse_scorers(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCORERS]
    if unknown or not names:
        raise EditkitError(f"unknown scorer '{','.join(unknown) or text}'; known scorers: {', '.join(SCORERS)}")
    return list(dict.fromkeys(names))
