"""Pushes one stream through an editor under a schedule and scores it with the protocol's scorers.

The harness, not the method, decides when scoring happens, what is scored, how the time of an edit is
measured and what is written; a method only sees ``edit()`` calls and inference batches.
"""

from __future__ import annotations

import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import editkit
from editkit.baseline import UneditedEditor
from editkit.errors import EditkitError
from editkit.editor import STATE_TENSORS, EditorConfig
from editkit.hashing import sha256_file
from editkit.registry import EditorSpec
from editkit.tier.common import FULL as FULL_LOOP

from .checkpoints import START, read_checkpoint, results_at, rewind, save_checkpoint
from .routing import routing_prompts, routing_rows
from .schedules import Schedule
from .scorers import SCORERS, Score, Scorer
from .store import RunWriter, SummaryRow, full_loop_steps, summarize, write_json_atomic
from .streams import Stream


def check_finite_losses(method: str, step: int, request_id: str, stats: dict[str, Any], dtype: Any = None) -> None:
    """Stop the run (EditkitError: one line, exit 2) when an edit reports a NaN or infinite loss.

    A non-finite loss means the edit wrote garbage into the editor's state (float16 overflow is the usual
    cause); scoring on would print numbers (often all zeros) that look like results. The edit's row is not
    written, so everything on disk is from the edits before it."""
    bad = [
        f"{key}={value}"
        for key, value in stats.items()
        if "loss" in key and isinstance(value, (int, float)) and not isinstance(value, bool) and not np.isfinite(value)
    ]
    if bad:
        hint = "; float16 overflows easily, try --dtype bfloat16 or float32" if dtype == "float16" else ""
        raise EditkitError(
            f"{method}: edit {step} (request {request_id}) has a non-finite loss ({', '.join(bad)}); "
            f"the run stops here, results of the earlier edits are kept{hint}"
        )


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Harness:
    """Everything that is the same for every method of a comparison.

    ``model_info``: model id, weights hash, dtype, device. ``dataset_info``: path/name and sha256.
    """

    model: torch.nn.Module
    tokenizer: Any
    stream: Stream
    schedule: Schedule
    scorer_names: Sequence[str]
    model_info: dict[str, Any]
    dataset_info: dict[str, Any]
    seed: int = 0
    batch_size: int = 16
    progress: bool = True
    #: a saved editor state (``state/`` of an earlier run) every editor starts from, instead of no edits
    initial_state: Path | None = None
    #: edits between two saved editor states (also saved at every scoring step), for resuming
    checkpoint_every: int = 10
    #: scorer settings (``judge``: the wild scorer's external judge callable)
    scorer_options: dict[str, Any] = field(default_factory=dict)
    #: protocol fields beyond the defaults that go on every row (``chat_template``, ``tuned_on``)
    protocol: dict[str, Any] = field(default_factory=dict)
    #: entries added to every config.json (the chat template, a judge's name, how a config was tuned)
    record: dict[str, Any] = field(default_factory=dict)
    scorers: list[Scorer] = field(init=False)

    def __post_init__(self) -> None:
        bar = (lambda it: tqdm(it, desc="  scoring", leave=False, unit="batch")) if self.progress else None
        self.scorers = [SCORERS[name](self.tokenizer, self.batch_size, progress=bar, options=self.scorer_options) for name in self.scorer_names]
        self.plan = self.schedule.plan(len(self.stream))
        self._prepared = False

    def prepare(self) -> None:
        """Unedited predictions for every locality set the schedule scores; before any edit, because a
        fine-tuning editor changes the shared model's weights in place until it is reset."""
        unedited = UneditedEditor(self.model, self.tokenizer)
        groups = list(dict.fromkeys(cp.locality for cp in self.plan))
        for scorer in self.scorers:
            scorer.prepare(unedited, self.stream.requests, groups)
        self._prepared = True

    def reference_predictions(self) -> dict[str, list[tuple[tuple[tuple[str, str], ...], list[torch.Tensor]]]]:
        """The unedited predictions :meth:`prepare` computed, per scorer: what another run of this same
        stream (model, batch size, schedule) can reuse instead of computing them again (``editkit grid``)."""
        if not self._prepared:
            self.prepare()
        return {scorer.name: list(scorer._reference.items()) for scorer in self.scorers}

    def use_reference_predictions(self, shared: dict[str, list[tuple[Any, list[torch.Tensor]]]]) -> None:
        """Take the unedited predictions from :meth:`reference_predictions` of another run instead of
        :meth:`prepare`; a locality set they lack still fails loudly at scoring time."""
        for scorer in self.scorers:
            scorer._reference = {tuple(tuple(pair) for pair in key): list(outputs) for key, outputs in shared[scorer.name]}
        self._prepared = True

    def context(self, method: str) -> dict[str, Any]:
        return {
            "method": method,
            "model": str(self.model_info.get("model_id")),
            "dataset": str(self.dataset_info.get("name")),
            "stream": self.stream.hash,
            "schedule": str(self.schedule),
            **self.protocol,
        }

    def run_config(self, spec: EditorSpec, config: EditorConfig) -> dict[str, Any]:
        import transformers

        started_from: dict[str, Any] = {}
        if self.initial_state is not None:  # the edits this run starts from are part of what it measured
            tensors = self.initial_state / STATE_TENSORS
            started_from["initial_state"] = {"path": str(self.initial_state), "sha256": sha256_file(tensors)}
        return {
            "method": spec.name,
            "editor_class": f"{spec.editor_class.__module__}.{spec.editor_class.__qualname__}",
            "method_config": config.to_dict(),
            **started_from,
            "model": self.model_info,
            "dataset": self.dataset_info,
            "stream_hash": self.stream.hash,
            "stream_order": self.stream.order,
            "num_edits": len(self.stream),
            "seed": self.seed,
            "schedule": str(self.schedule),
            "edits_per_step": self.schedule.per_step,
            "batch_edits": spec.editor_class.batch_edits,
            "scorers": list(self.scorer_names),
            "batch_size": self.batch_size,
            # float sums are ordered by the thread count, so it is part of what reproduces a number
            "threads": torch.get_num_threads(),
            "versions": {
                "editkit": editkit.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
            },
            "command": " ".join(sys.argv),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.record,
        }

    def run(self, spec: EditorSpec, config: EditorConfig, directory: Path, resume: bool = False) -> list[SummaryRow]:
        """Edit the whole stream with one method, scoring at the schedule's checkpoints; always resets.

        The editor's state is checkpointed every ``checkpoint_every`` edits and at every scoring step;
        with ``resume`` the run continues from the last checkpoint in ``directory`` (or returns its summary
        when it had finished)."""
        if not self._prepared:
            self.prepare()
        set_seed(self.seed)
        context = self.context(spec.name)
        per_checkpoint = self.schedule.kind != "immediate"
        requests = self.stream.requests
        last = read_checkpoint(directory, len(requests)) if resume else START
        if last.complete:
            return summarize(_scores(results_at(directory, last)), context, len(requests), per_checkpoint, full_loop_steps(directory, FULL_LOOP))
        spec.check_requests(requests)  # before the first edit: a field the method needs is missing
        editor = spec.build(self.model, self.tokenizer, config)
        editor.check_requests(requests)  # before anything is written
        say_batching(editor, self.schedule.per_step)
        editor.prepare([r.irrelevant for r in self.stream.requests if r.irrelevant])
        if last.state is not None:
            editor.load_state(last.state)
        elif self.initial_state is not None:
            editor.load_state(self.initial_state)
        scores: list[Score] = _scores(rewind(directory, last)) if resume else []  # only once the state loaded
        writer = RunWriter(directory, self.run_config(spec, config), context, keep_config=resume)
        checkpoints = {cp.step: cp for cp in self.plan}
        summary: list[SummaryRow] = []
        bar = tqdm(requests, desc=f"{spec.name:>8} edits", unit="edit", disable=not self.progress, initial=last.step)
        try:
            for step in self.schedule.steps(len(requests)):
                if step.stop <= last.step:
                    continue  # applied before the run was interrupted (checkpoints fall between steps)
                for index, stats in zip(step, timed_step(editor, [requests[i] for i in step])):
                    check_finite_losses(spec.name, index + 1, requests[index].id, stats, self.model_info.get("dtype"))
                    writer.edit(index + 1, requests[index].id, stats)
                bar.update(len(step))
                index = step.stop - 1
                checkpoint = checkpoints.get(index + 1)
                if checkpoint is not None:
                    for scorer in self.scorers:
                        start = time.perf_counter()
                        rows = scorer.score(editor, requests, checkpoint.step, checkpoint.edits, checkpoint.locality)
                        writer.scores(rows)
                        writer.timing(checkpoint.step, f"score:{scorer.name}", time.perf_counter() - start, len(rows))
                        scores.extend(rows)
                    start = time.perf_counter()
                    prompts = routing_prompts(requests, checkpoint)
                    for rows in routing_rows(editor, self.tokenizer, prompts, checkpoint.step, self.batch_size):
                        writer.routing(rows)
                    writer.timing(checkpoint.step, "routing", time.perf_counter() - start, len(prompts))
                    if per_checkpoint or checkpoint.step == len(requests):
                        summary = summarize(scores, context, len(requests), per_checkpoint, full_loop_steps(directory, FULL_LOOP))
                        writer.summary(summary)
                if index + 1 < len(requests) and (checkpoint is not None or _crossed(step, self.checkpoint_every)):
                    save_checkpoint(directory, index + 1, editor, writer.sync())
            save_checkpoint(directory, len(requests), editor, writer.sync(), complete=True)
        finally:
            bar.close()
            writer.close()
            editor.reset()
        full_loops = full_loop_steps(directory, FULL_LOOP)  # steps of the edits a fast loop's fallback ran
        if full_loops:
            print(f"{spec.name}: {len(full_loops)} of {len(requests)} edits ran the full forward (loop: full in edits.jsonl, full_loop_edits in summary.json)", file=sys.stderr)
        return summary


def timed_step(editor: editkit.Editor, requests: Sequence[editkit.EditRequest]) -> list[dict[str, Any]]:
    """One edit step's stats, one dict per request; a step of B requests that took S seconds records S / B
    as each request's ``seconds`` (and S as ``step_seconds``), so seconds per edit compare across B."""
    start = time.perf_counter()
    all_stats = [dict(stats) for stats in editor.edit_batch(requests)]
    elapsed = time.perf_counter() - start
    if len(all_stats) != len(requests):
        raise RuntimeError(f"{editor.name}.edit_batch returned {len(all_stats)} stats for {len(requests)} requests")
    for stats in all_stats:
        stats["seconds"] = elapsed / len(requests)
        if len(requests) > 1:
            stats["step_seconds"] = elapsed
    return all_stats


def say_batching(editor: editkit.Editor, per_step: int) -> None:
    """One line when a method asked for batch edits applies them one by one (the numbers stay valid: the
    stream is edited in the same order, but it is not the joint batch update)."""
    if per_step > 1 and not editor.batch_edits:
        print(f"editkit: {editor.name} has no batch edit; each step of {per_step} requests is applied one by one", file=sys.stderr)


def _crossed(step: range, every: int) -> bool:
    """Whether an edit step ended on or passed a multiple of ``every`` edits."""
    return step.stop // every > step.start // every


def _scores(rows: Sequence[dict[str, Any]]) -> list[Score]:
    """The scores a resumed run had already written, as the harness produced them."""
    return [Score(r["step"], r["edit_id"], r["metric"], r["scorer"], r["value"]) for r in rows]


def compare(
    harness: Harness, runs: Sequence[tuple[EditorSpec, EditorConfig]], directory: Path, resume: bool = False
) -> list[SummaryRow]:
    """One sub-directory per method plus a combined ``summary.json``, rewritten after every method."""
    combined: list[SummaryRow] = []
    harness.prepare()
    for spec, config in runs:
        combined += harness.run(spec, config, directory / spec.name, resume=resume)
        write_json_atomic(directory / "summary.json", [asdict(r) for r in combined])
    return combined
