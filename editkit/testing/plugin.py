"""pytest plugin of the conformance suite: its fixtures and its parametrisation over every registered
editor and every config variant an editor declares (``Editor.conformance_variants``).

editkit's ``pytest11`` entry point loads it into every pytest run of an environment where editkit is
installed (``-p editkit.testing.plugin`` does the same where plugin autoloading is off); it only acts on
tests that ask for its fixtures. The suite itself is :mod:`editkit.testing.test_conformance`:

    pytest --pyargs editkit.testing                              # every registered editor
    pytest --pyargs editkit.testing --editkit-editors my-method  # only some
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import pytest
import torch

from editkit.batching import PromptBatch, encode, tokenize_pair
from editkit.editor import Editor, EditorConfig
from editkit.registry import EditorSpec, available_editors, get_editor_spec
from editkit.requests import EditRequest

from .models import tiny_model_and_tokenizer, tiny_tokenizer

DEFAULT = "default"

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


@dataclass(frozen=True)
class EditorCase:
    """One editor under one config: a registered name and, for a declared variant, its overrides."""

    name: str
    variant: str = DEFAULT
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.name if self.variant == DEFAULT else f"{self.name}:{self.variant}"

    @property
    def spec(self) -> EditorSpec:
        return get_editor_spec(self.name)

    def config(self) -> EditorConfig:
        return self.spec.make_config(**self.overrides)

    def build(self, model: torch.nn.Module | None = None, tokenizer: Any = None) -> Editor:
        """The editor on ``model`` (default: a fresh tiny model, seed 0, the same weights every time)."""
        if model is None:
            model, tokenizer = tiny_model_and_tokenizer()
        return self.spec.build(model, tokenizer, self.config())


#: config values that keep an editor's one-time preparation small on the tiny models, applied to the
#: editors whose config has the field (second-moment statistics over a generated corpus: 16 texts give
#: the tiny models' 64- to 256-wide keys a full-rank estimate, and cost a second instead of eight)
QUICK_PREPARATION = {"mom2_samples": 16}


def quick(case: EditorCase) -> EditorCase:
    """``case`` with :data:`QUICK_PREPARATION` for the fields its config has (for tests that build many
    editors on many models; the conformance suite itself runs every case as declared)."""
    names = {f.name for f in fields(case.spec.editor_class.config_class)}
    extra = {k: v for k, v in QUICK_PREPARATION.items() if k in names and k not in case.overrides}
    return EditorCase(case.name, case.variant, {**case.overrides, **extra}) if extra else case


def editor_cases(names: Sequence[str] | None = None) -> list[EditorCase]:
    """Every registered editor (or those of ``names``) with its defaults, then each of its declared variants."""
    cases = []
    for name, spec in available_editors().items():
        if names is not None and name not in names:
            continue
        cases.append(EditorCase(name))
        for variant, overrides in spec.editor_class.conformance_variants.items():
            cases.append(EditorCase(name, variant, dict(overrides)))
    return cases


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--editkit-editors", default=None, metavar="NAME,...",
        help="editkit conformance suite: only these registered editors (default: all of them)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "editor_case" in metafunc.fixturenames:
        option = metafunc.config.getoption("--editkit-editors")
        names = [n.strip() for n in option.split(",") if n.strip()] if option else None
        cases = editor_cases(names)
        metafunc.parametrize("editor_case", cases, ids=[case.id for case in cases])


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
    """``build_editor(name, config=None, **overrides)``: the registered editor on a fresh tiny model (seed 0).

    Every call builds a new model from the same seed, so two editors never share weights and a fresh
    one is an exact copy of the base model another editor started from.
    """

    def build(name: str, config: EditorConfig | None = None, **overrides: Any) -> Editor:
        spec = get_editor_spec(name)
        model, tokenizer = tiny_model_and_tokenizer()
        return spec.build(model, tokenizer, config if config is not None else spec.make_config(**overrides))

    return build


@pytest.fixture()
def fresh_model():
    """A fresh unedited tiny model (the same weights every editor starts from) and its tokenizer."""
    return tiny_model_and_tokenizer()


def _continuation_batch(tokenizer: Any, prompt: str, continuation: list[int]) -> PromptBatch:
    """One row: ``prompt`` followed by already generated token ids, the prompt boundary kept."""
    prompt_ids, _ = tokenize_pair(tokenizer, prompt, None)
    ids = torch.tensor([prompt_ids + list(continuation)], dtype=torch.long)
    prompt_mask = torch.zeros_like(ids, dtype=torch.bool)
    prompt_mask[:, : len(prompt_ids)] = True
    return PromptBatch(ids, torch.ones_like(ids), prompt_mask, ~prompt_mask, "right")


def _target_log_prob(editor: Editor, tokenizer: Any, prompt: str, target: str) -> float:
    """Mean teacher-forced log-probability of the target tokens after ``prompt`` under ``editor``."""
    batch = encode(tokenizer, [prompt], [target])
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

    def make(padding_side: str = "right") -> PromptBatch:
        pairs = _probe_pairs(edit_requests, unrelated_prompts)
        return encode(tok, [p for p, _ in pairs], [t for _, t in pairs], padding_side=padding_side)

    return make
