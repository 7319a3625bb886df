"""The ordered list of edits every method in a comparison receives, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from editkit.batching import chat_prompt, has_chat_template, tokenize_pair
from editkit.errors import DataError, EditkitError
from editkit.requests import EditRequest


def stream_hash(requests: Sequence[EditRequest]) -> str:
    """sha256 over ids and every text the protocol reads, in stream order.

    Two runs with equal hashes edited and scored the same requests in the same order, whatever file or
    loader they came from; meta is left out because no scorer reads it. Portability questions are
    hashed only where a request has some, so streams without them keep the hash they always had.
    """
    digest = hashlib.sha256()
    for r in requests:
        record = [r.id, r.prompt, r.target, list(r.rephrases), [list(p) for p in r.locality], r.irrelevant]
        if r.portability:
            record.append([list(p) for p in r.portability])
        digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class Stream:
    requests: tuple[EditRequest, ...]
    order: str  # "file" or "shuffle:SEED"

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def hash(self) -> str:
        return stream_hash(self.requests)


def make_stream(
    requests: Sequence[EditRequest], num_edits: int | None = None, shuffle_seed: int | None = None, start: int = 0
) -> Stream:
    """The first ``num_edits`` requests in file order, or of a seeded shuffle of the whole dataset, after
    skipping ``start`` of them (how a held-out slice such as CounterFact 6,000-7,999 is taken)."""
    pool = list(requests)
    if not pool:
        raise EditkitError("the dataset holds no requests")
    order = "file"
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(pool)
        order = f"shuffle:{shuffle_seed}"
    if start:
        if not 0 <= start < len(pool):
            raise EditkitError(f"--start {start} is outside the {len(pool)} requests in the dataset")
        pool = pool[start:]
        order += f"[{start}:]"
    if num_edits is not None:
        if num_edits < 1:
            raise EditkitError(f"--num-edits must be at least 1, got {num_edits}")
        if num_edits > len(pool):
            raise EditkitError(f"--num-edits {num_edits} exceeds the {len(pool)} requests left in the dataset")
        pool = pool[:num_edits]
    ids = [r.id for r in pool]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise EditkitError(f"request id '{dup}' occurs more than once in the stream; ids must be unique")
    return Stream(tuple(pool), order)


def folded(text: object) -> str:
    """A text compared case- and whitespace-insensitively (subjects, targets, recorded answers)."""
    return " ".join(str(text).casefold().split())


def contested_edits(requests: Sequence[EditRequest]) -> frozenset[str]:
    """Ids of the edits whose subject another edit of the stream gives a different target.

    ZsRE asks the same question about one subject several times with different new answers (test slice
    0-299 of the bundled stream: 117 of 300 edits). A rephrase of such an edit is worded as close to the
    other edit's prompt as to its own, so any editor that answers a query from its nearest stored edit
    answers some of them with the other target, and the scorer, which expects every edit to hold at once,
    counts it wrong: a cap on generalization set by the stream, not by the method. Subjects and targets
    are compared case- and whitespace-folded; a request without a subject is never contested (nothing
    says which edits it shares a subject with).
    """
    targets: dict[str, set[str]] = {}
    for r in requests:
        if r.subject and r.subject.strip():
            targets.setdefault(folded(r.subject), set()).add(folded(r.target))
    return frozenset(r.id for r in requests if r.subject and r.subject.strip() and len(targets[folded(r.subject)]) > 1)


def locality_in_reach(requests: Sequence[EditRequest], stored: int | None = None) -> dict[str, tuple[tuple[int, str], ...]]:
    """Per edit id, the locality prompts (their index, and the subject named) that name the subject of
    another edit of the stream, as a whole word; edits without any are left out. With ``stored``, only the
    first ``stored`` edits' subjects count (what is edited at that checkpoint; a schedule scores the whole
    stream's locality set at every checkpoint).

    A locality prompt is meant to be out of every edit's scope, but CounterFact's are other subjects
    with the edit's relation, and on a long stream those subjects get edits of their own: on the
    8,000-edit stream 13.5 % of locality prompts name a subject the stream edits, and for 5.5 % that edit
    rewrote the very fact the prompt asks for (its recorded original answer, ``meta["ground_truth"]``,
    is the locality answer). An editor that applies the other edit fails such a prompt by design;
    ``scripts/contested_edits.py`` counts them and splits locality over them.
    """
    subjects = {r.subject.strip() for r in requests[:stored] if r.subject and r.subject.strip()}
    if not subjects:
        return {}
    names = sorted(subjects, key=len, reverse=True)  # the longest subject a prompt names wins
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(name)}(?!\w)" for name in names))
    found: dict[str, tuple[tuple[int, str], ...]] = {}
    for r in requests:
        own = (r.subject or "").strip()
        hits = []
        for index, (prompt, _) in enumerate(r.locality):
            other = next((m.group(0) for m in pattern.finditer(prompt) if m.group(0) != own), None)
            if other is not None:
                hits.append((index, other))
        if hits:
            found[r.id] = tuple(hits)
    return found


def with_chat_template(stream: Stream, tokenizer: Any, model_id: str) -> Stream:
    """The stream with every prompt a method edits with or a scorer reads (edit prompt, rephrases,
    locality prompts, portability questions) put through the model's chat template.

    Done once, on the stream, so editing and every scorer see the same templated prompts and no method or
    scorer can forget it; the stream hash changes with the texts. A model without a template is refused.
    """
    if not has_chat_template(tokenizer):
        raise EditkitError(f"--chat-template on: model {model_id} has no chat template; run with --chat-template off")

    def chat(text: str) -> str:
        return chat_prompt(tokenizer, text)

    requests = tuple(
        replace(
            r,
            prompt=chat(r.prompt),
            rephrases=tuple(chat(q) for q in r.rephrases),
            locality=tuple((chat(p), a) for p, a in r.locality),
            portability=tuple((chat(q), a) for q, a in r.portability),
        )
        for r in stream.requests
    )
    return Stream(requests, stream.order + "+chat")


def _scored_pairs(request: EditRequest) -> Iterator[tuple[str, str, str, str]]:
    """(prompt field, prompt, answer field, answer) of every sequence the scorers feed for ``request``."""
    yield "prompt", request.prompt, "target", request.target
    for j, rephrase in enumerate(request.rephrases):
        yield f"rephrases[{j}]", rephrase, "target", request.target
    for j, (prompt, answer) in enumerate(request.locality):
        yield f"locality[{j}].prompt", prompt, f"locality[{j}].answer", answer
    for j, (question, answer) in enumerate(request.portability):
        yield f"portability[{j}].prompt", question, f"portability[{j}].answer", answer


def check_fits_model(
    stream: Stream, requests: Sequence[EditRequest], tokenizer: Any, context: int | None, source: Path | str
) -> None:
    """Every sequence a scorer will feed has tokens to score and fits the model's context.

    Checked before the first edit, with this model's tokenizer, so that a record the model cannot score
    stops the run with its file, record and field instead of failing or scoring nan hours into a stream.
    ``requests`` is the whole file in order: the record number in a message is the file's, not the stream's.
    """
    record_of = {r.id: index for index, r in enumerate(requests)}
    for request in stream.requests:
        for prompt_field, prompt, answer_field, answer in _scored_pairs(request):
            prompt_ids, answer_ids = tokenize_pair(tokenizer, prompt, answer)
            problem, field = None, prompt_field
            if not prompt_ids:
                problem = "tokenizes to no tokens with this model's tokenizer"
            elif not answer_ids:
                problem, field = "tokenizes to no tokens after the prompt with this model's tokenizer", answer_field
            elif context is not None and len(prompt_ids) + len(answer_ids) > context:
                total = len(prompt_ids) + len(answer_ids)
                problem = f"{total} tokens with its answer, longer than the model's context of {context} tokens"
                if len(answer_ids) > len(prompt_ids):  # name the part that makes it too long
                    problem = f"{total} tokens with its prompt, longer than the model's context of {context} tokens"
                    field = answer_field
            if problem is not None:
                raise DataError(source, f"{problem} (request '{request.id}')", record=record_of.get(request.id), field=field)
