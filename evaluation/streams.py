"""The ordered list of edits every method in a comparison receives, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from editkit.batching import tokenize_pair
from editkit.errors import DataError, EditkitError
from editkit.requests import EditRequest


def stream_hash(requests: Sequence[EditRequest]) -> str:
    """sha256 over ids and every text the protocol reads, in stream order.

    Two runs with equal hashes edited and scored the same requests in the same order, whatever file or
    loader they came from; meta is left out because no scorer reads it.
    """
    digest = hashlib.sha256()
    for r in requests:
        record = [r.id, r.prompt, r.target, list(r.rephrases), [list(p) for p in r.locality], r.irrelevant]
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


def _scored_pairs(request: EditRequest) -> Iterator[tuple[str, str, str, str]]:
    """(prompt field, prompt, answer field, answer) of every sequence the scorers feed for ``request``."""
    yield "prompt", request.prompt, "target", request.target
    for j, rephrase in enumerate(request.rephrases):
        yield f"rephrases[{j}]", rephrase, "target", request.target
    for j, (prompt, answer) in enumerate(request.locality):
        yield f"locality[{j}].prompt", prompt, f"locality[{j}].answer", answer


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
