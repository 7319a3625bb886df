"""The conformance suite must catch real faults: a small correct toy editor passes every check, and each
deliberately broken variant of it fails the check that guards its fault.

The toy remembers, per edited prompt, a bias on the target's first token, applied at the last prompt
position of rows whose prompt is exactly an edited one. Each variant breaks one promise of the contract.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import pytest
import torch

import editkit.registry as registry
import editkit.testing.test_conformance as conformance
from editkit import EditRequest, Editor, PromptBatch
from editkit.batching import tokenize_pair
from editkit.registry import EditorSpec
from editkit.testing.plugin import EditorCase

BIAS = 25.0


class ToyEditor(Editor):
    """Correct: per-row, exact prompt match, decision kept through the KV cache, state saved."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: Any = None):
        super().__init__(model, tokenizer, config)
        self.memory: dict[tuple[int, ...], int] = {}

    def edit(self, request: EditRequest) -> dict[str, Any]:
        prompt_ids, target_ids = tokenize_pair(self.tokenizer, request.prompt, request.target)
        self.memory[tuple(prompt_ids)] = target_ids[0]
        return {"iterations": 1, "seconds": 0.0}

    def reset(self) -> None:
        self.memory = {}

    def _targets(self, batch: PromptBatch) -> list[tuple[int, int, int]]:
        """(row, last prompt column, token to push) for rows whose prompt was edited."""
        hits = []
        for row in range(len(batch)):
            columns = torch.nonzero(batch.prompt_mask[row]).flatten()
            key = tuple(batch.input_ids[row, columns].tolist())
            if key in self.memory:
                hits.append((row, int(columns[-1]), self.memory[key]))
        return hits

    def _push(self, logits: torch.Tensor, hits: list[tuple[int, int, int]], prefill: bool) -> None:
        """Add the bias in place: at the prefill only (decode steps: the prompt's last position is behind us)."""
        if prefill:
            for row, column, token in hits:
                logits[row, column, token] += BIAS

    @contextmanager
    def routing(self, batch: PromptBatch) -> Iterator[None]:
        hits = self._targets(batch)
        calls: list[int] = []

        def hook(_module: torch.nn.Module, _args: tuple, logits: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            logits = logits.clone()
            self._push(logits, hits, prefill=len(calls) == 1)
            return logits

        handle = self.model.get_output_embeddings().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def state_dict(self) -> dict[str, torch.Tensor]:
        keys = sorted(self.memory)
        width = max((len(k) for k in keys), default=0)
        prompts = torch.full((len(keys), width), -1, dtype=torch.long)
        for i, key in enumerate(keys):
            prompts[i, : len(key)] = torch.tensor(key)
        return {"prompts": prompts, "tokens": torch.tensor([self.memory[k] for k in keys], dtype=torch.long)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        self.memory = {
            tuple(t for t in row.tolist() if t >= 0): int(token) for row, token in zip(tensors["prompts"], tensors["tokens"])
        }


class LeaksAfterReset(ToyEditor):
    def reset(self) -> None:
        pass


class RoutesOnTheWholeBatch(ToyEditor):
    def _targets(self, batch: PromptBatch) -> list[tuple[int, int, int]]:
        hits = super()._targets(batch)
        if not hits:
            return hits
        token = hits[0][2]  # one hit switches the edit on for every row of the batch
        return [(row, int(torch.nonzero(batch.prompt_mask[row]).flatten()[-1]), token) for row in range(len(batch))]


class SavesNothing(ToyEditor):
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"prompts": torch.zeros(0, 0, dtype=torch.long), "tokens": torch.zeros(0, dtype=torch.long)}


class ForgetsRoutingWhileDecoding(ToyEditor):
    """Re-decides at every decode step from what it sees there (no prompt), and so pushes every row."""

    def _push(self, logits: torch.Tensor, hits: list[tuple[int, int, int]], prefill: bool) -> None:
        super()._push(logits, hits, prefill)
        if not prefill:
            for token in self.memory.values():
                logits[:, -1, token] += BIAS


class UsesTheGlobalRng(ToyEditor):
    def edit(self, request: EditRequest) -> dict[str, Any]:
        prompt_ids, _ = tokenize_pair(self.tokenizer, request.prompt, request.target)
        self.memory[tuple(prompt_ids)] = int(torch.randint(0, 200, ()))
        return {"iterations": 1, "seconds": 0.0}


class IgnoresEdits(ToyEditor):
    def edit(self, request: EditRequest) -> dict[str, Any]:
        return {"iterations": 0, "seconds": 0.0}


class WritesBaseWeights(ToyEditor):
    def edit(self, request: EditRequest) -> dict[str, Any]:
        with torch.no_grad():
            self.model.get_output_embeddings().weight[0, 0] += 1.0
        return super().edit(request)


class ReportsNoIterations(ToyEditor):
    def edit(self, request: EditRequest) -> dict[str, Any]:
        super().edit(request)
        return {"seconds": 0.0}


#: each broken editor and the conformance checks that must catch it
FAULTS = [
    (LeaksAfterReset, ["test_reset_restores_the_unedited_logits", "test_editing_after_reset_matches_a_fresh_editor"]),
    (RoutesOnTheWholeBatch, ["test_batched_logits_equal_each_row_alone"]),
    (SavesNothing, ["test_saved_state_reproduces_logits_exactly"]),
    (ForgetsRoutingWhileDecoding, ["test_generation_keeps_routing_through_the_kv_cache"]),
    (UsesTheGlobalRng, ["test_same_requests_give_bitwise_equal_logits"]),
    (IgnoresEdits, ["test_edit_makes_the_target_more_likely"]),
    (WritesBaseWeights, ["test_base_weights_unchanged_unless_declared"]),
    (ReportsNoIterations, ["test_edit_returns_stats_for_a_sequence_of_edits"]),
]
CHECKS = sorted({check for _, checks in FAULTS for check in checks})


@pytest.fixture()
def register(monkeypatch):
    """``register(cls) -> name``: the class registered for this test only."""

    def add(cls: type[Editor]) -> str:
        name = f"toy-{cls.__name__.lower()}"
        monkeypatch.setitem(registry._REGISTRY, name, EditorSpec(name, cls, {}, source="test"))
        return name

    return add


def _run_check(check: str, name: str, request: pytest.FixtureRequest) -> None:
    """Call a conformance test function with its fixtures, for the editor registered as ``name``."""
    function = getattr(conformance, check)
    names = function.__code__.co_varnames[: function.__code__.co_argcount]
    kwargs = {arg: (EditorCase(name) if arg == "editor_case" else request.getfixturevalue(arg)) for arg in names}
    function(**kwargs)


@pytest.mark.parametrize("check", CHECKS)
def test_the_correct_toy_passes(check, register, request):
    _run_check(check, register(ToyEditor), request)


@pytest.mark.parametrize(
    "broken, check", [(cls, check) for cls, checks in FAULTS for check in checks], ids=lambda x: getattr(x, "__name__", x)
)
def test_each_fault_is_caught(broken, check, register, request):
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        _run_check(check, register(broken), request)
