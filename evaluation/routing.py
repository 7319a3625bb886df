"""Routing scores of a checkpoint's prompts, for editors that decide per query whether an edit applies.

The harness records them, not the method, for the same prompts the scorers read: the edit prompts and their
rephrases (which should reach an edit) and the locality prompts (which should not). A report can then show
how well each method's score separates the two, and so why its generalization or locality is lost.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from editkit.batching import encode
from editkit.editor import Editor
from editkit.errors import EditkitError
from editkit.requests import EditRequest

from .schedules import Checkpoint
from .schema import RoutingRow, required_fields

#: the fields of a routing row that come from the editor's scores (the others are the run's context)
SCORED_FIELDS = ("step", "edit_id", "kind", "score", "threshold", "score_name")
assert set(SCORED_FIELDS) <= set(required_fields(RoutingRow))

#: in scope: the edit's own prompt and its rephrases; out of scope: the locality prompts
KINDS = ("edit", "rephrase", "locality")
IN_SCOPE = ("edit", "rephrase")

#: (kind, id of the request the prompt belongs to, prompt)
RoutingPrompt = tuple[str, str, str]


def routing_prompts(stream: Sequence[EditRequest], checkpoint: Checkpoint) -> list[RoutingPrompt]:
    """The prompts a checkpoint scores, by kind: its edits, their rephrases, its locality set."""
    edits = [stream[i] for i in checkpoint.edits]
    prompts = [("edit", r.id, r.prompt) for r in edits]
    prompts += [("rephrase", r.id, q) for r in edits for q in r.rephrases]
    prompts += [("locality", stream[i].id, p) for i in checkpoint.locality for p, _ in stream[i].locality]
    return prompts


def routing_rows(
    editor: Editor, tokenizer: Any, prompts: Sequence[RoutingPrompt], step: int, batch_size: int
) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``routing.jsonl`` (the fields of :class:`~editkit.evaluation.schema.RoutingRow` the editor
    decides; the writer adds the run's context), one batch at a time so they can be written as they are
    produced; nothing at all when the editor does not route (its
    :meth:`~editkit.editor.Editor.routing_scores` is None)."""
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        batch = encode(tokenizer, [p for _, _, p in chunk], None, "right")
        result = editor.routing_scores(batch)
        if result is None:
            if start:
                raise EditkitError(f"editor '{editor.name}': routing_scores returned scores for some batches and None for others")
            return
        if len(result) != len(chunk):
            raise EditkitError(f"editor '{editor.name}': routing_scores gave {len(result)} scores for a batch of {len(chunk)} rows")
        yield [
            {field: value for field, value in zip(SCORED_FIELDS, (step, edit_id, kind, score, result.threshold, result.name))}
            for (kind, edit_id, _), score in zip(chunk, result.scores)
        ]
