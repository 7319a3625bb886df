"""The ``Editor`` contract every editing method implements.

An editor owns a frozen base model and some edit state (a memory, a codebook, changed weights). The harness
only ever talks to it through this class: :meth:`edit` one request at a time, :meth:`logits` and
:meth:`generate` for scoring, :meth:`state_dict`/:meth:`load_state_dict` for saving, :meth:`reset`.

Per-row routing: scorers hand over a :class:`~editkit.batching.PromptBatch` that carries each row's
prompt boundary. A routing method overrides :meth:`routing`, a context manager inside which the model's
forward passes apply its per-row decision (taken from the prompt tokens of each row). :meth:`generate`
runs its whole KV-cache decoding loop inside one ``routing`` context, so a decision taken in the prefill
pass (where the prompt is visible) stays fixed for every generated token.

Routing diagnostics: a routing method can also say *how sure* it is that each row is in scope
(:meth:`Editor.routing_scores`, returning :class:`RoutingScores`). The harness records these scores for edit
prompts, rephrases and locality prompts, so a report can show why generalization or locality is lost.
"""

from __future__ import annotations

import functools
import inspect
import json
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .batching import PromptBatch
from .errors import ConfigError, EditkitError, first_line
from .requests import EditRequest

STATE_TENSORS = "state.safetensors"
STATE_META = "state.json"

#: how one EasyEdit hparams key becomes config fields: ``(value, whole file) -> {field: value}``
Converter = Callable[[Any, Mapping[str, Any]], dict[str, Any]]
#: a method's EasyEdit key table (read by :mod:`editkit.easyedit`, declared here so the contract does not
#: depend on the adapter): key -> field name, converter, or None for a key that is known and not used
KeyTable = Mapping[str, "str | Converter | None"]


@dataclass
class EditorConfig:
    """Base of every method's hyper-parameter dataclass; defaults are the official ones."""

    #: ``alg_name`` values of the EasyEdit hparams files of this method (upper case; empty: not checked)
    easyedit_alg_names: ClassVar[tuple[str, ...]] = ()
    #: how the keys of this method's EasyEdit hparams files map onto its fields (see :mod:`editkit.easyedit`)
    easyedit_keys: ClassVar[KeyTable] = {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def override(self, **values: Any) -> "EditorConfig":
        """A copy with ``values`` set; strings (from ``--set key=value``) are parsed to the field's type."""
        known = {f.name: f for f in fields(self)}
        data = self.to_dict()
        for key, raw in values.items():
            if key not in known:
                raise ConfigError(
                    f"{type(self).__name__} has no option '{key}'; options: {', '.join(sorted(known))}"
                )
            data[key] = _coerce(raw, data[key], key) if isinstance(raw, str) else raw
        return type(self)(**data)


def _coerce(raw: str, current: Any, key: str) -> Any:
    """Parse a command-line string using the current value's type (or JSON when the type is unclear)."""
    text = raw.strip()
    try:
        if isinstance(current, bool):
            lowered = text.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if text.lower() in {"none", "null"}:
            return None
        return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        if current is None:
            return text
        raise ConfigError(f"option '{key}': cannot read '{raw}' as {type(current).__name__}") from None


@dataclass(frozen=True)
class RoutingScores:
    """The in-scope score of every row of one batch and the operating point the editor routes with.

    The contract, the same for every routing method:

    - ``scores``: one finite float per row of the batch, in row order; **higher = more in scope**.
    - ``threshold``: the editor applies its edit to a row exactly when ``score >= threshold`` (its
      operating point as configured now). A method whose decision has another direction or a per-key
      threshold rescales its score so that this holds with one number, e.g. a key distance ``d`` within a
      per-key radius ``r`` as ``score = r - d`` with ``threshold = 0``; an activation gap compared with a
      running minimum as ``score = gap`` with ``threshold = minimum * ratio``.
    - ``name``: a few words saying what the score is, shown on report axes (e.g. "best mask overlap").

    ``scores`` accepts a list, numpy array or tensor and is stored as a tuple of floats.
    """

    scores: tuple[float, ...]
    threshold: float
    name: str

    def __post_init__(self) -> None:
        values = self.scores
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().double().numpy()
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(array).all() or not np.isfinite(self.threshold):
            raise ValueError(f"routing scores '{self.name}' must be finite numbers")
        object.__setattr__(self, "scores", tuple(float(v) for v in array))
        object.__setattr__(self, "threshold", float(self.threshold))

    def __len__(self) -> int:
        return len(self.scores)


def _cache_kwargs(model: torch.nn.Module, out: Any) -> dict[str, Any]:
    """Hand the KV cache of ``out`` back to the model under the name its transformers version uses."""
    cache = out.get("cache") if "cache" in out else out.get("past_key_values")
    return {_cache_argument(model): cache}


def _cache_argument(model: torch.nn.Module) -> str:
    """The name under which this model's forward takes a KV cache (``cache`` since transformers 5.40)."""
    return "cache" if "cache" in _forward_params(type(model)) else "past_key_values"


@functools.lru_cache(maxsize=None)
def _forward_params(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


class Editor(ABC):
    """Abstract editor. Subclasses set ``config_class`` and implement :meth:`edit` and :meth:`reset`.

    What is special about a method is declared here, as class attributes, never inferred from its name:
    shared code (the harness, the CLI, the conformance suite) reads these and nothing else.
    """

    config_class: ClassVar[type[EditorConfig]] = EditorConfig
    #: the registered name this editor was built under; set in one place, :meth:`EditorSpec.build
    #: <editkit.registry.EditorSpec.build>` (one class may serve several names, e.g. ``ft`` and ``ft-l``)
    name: str = ""
    #: the editor changes the model's own weights (and restores them on :meth:`reset`); the conformance
    #: suite then skips its "base weights unchanged" check
    modifies_base_weights: ClassVar[bool] = False
    #: the unedited reference row of every comparison (shown first, never ranked, never edited)
    is_baseline: ClassVar[bool] = False
    #: :class:`EditRequest` fields every request must carry for this method (e.g. ``("subject",)``),
    #: checked for the whole stream before the first edit (:func:`check_required_fields`)
    required_fields: ClassVar[tuple[str, ...]] = ()
    #: named config variants the conformance suite runs besides the defaults, e.g. ``{"retrieve":
    #: {"retrieve": True}}``: every code path a config switches on must meet every check
    conformance_variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: EditorConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise ConfigError(f"{type(self).__name__} expects a {self.config_class.__name__}")

    # ------------------------------------------------------------------ editing
    def prepare(self, unrelated_texts: Sequence[str]) -> None:
        """Called once before the first edit with texts unrelated to every edit of the stream (the
        requests' irrelevant texts, never anything that is scored), for methods that need a background or
        negatives; the default ignores them."""

    @abstractmethod
    def edit(self, request: EditRequest) -> dict[str, Any]:
        """Apply one edit on top of all earlier ones; return its stats (iterations, loss, seconds...)."""

    #: True when :meth:`edit_batch` solves a batch jointly rather than one by one
    batch_edits: ClassVar[bool] = False

    def edit_batch(self, requests: Sequence[EditRequest]) -> list[dict[str, Any]]:
        """Apply several edits as one step (``--edits-per-step``); one stats dict per request, in order.
        The default applies them one by one with :meth:`edit`; a method that solves a batch jointly
        overrides this and sets :attr:`batch_edits`."""
        return [self.edit(request) for request in requests]

    def check_requests(self, requests: Sequence[EditRequest]) -> None:
        """Refuse, with an :class:`EditkitError` naming the record, a stream this method cannot edit
        (e.g. one without subjects); called before the first edit. The default accepts every stream."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every edit: afterwards the editor behaves exactly like the unedited model."""

    # ---------------------------------------------------------------- inference
    @contextmanager
    def routing(self, batch: PromptBatch) -> Iterator[None]:
        """Apply this editor's per-row routing to every forward pass inside the block (default: none)."""
        yield

    def routing_scores(self, batch: PromptBatch) -> RoutingScores | None:
        """Per-row in-scope scores of ``batch`` (prompts only: ``batch.prompt_mask`` marks them) and the
        threshold :meth:`routing` applies them with; ``None`` (the default) for an editor that does not
        decide per query. Must not change the edit state. See :class:`RoutingScores` for the contract."""
        return None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def logits(self, batch: PromptBatch) -> torch.Tensor:
        """[B, T, V] logits for the whole batch, with routing decided per row from its prompt."""
        batch = batch.to(self.device)
        with self.routing(batch):
            out = self.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
            )
        return out.logits

    @torch.no_grad()
    def generate(
        self, batch: PromptBatch, max_new_tokens: int, stop: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Greedy continuation, [B, max_new_tokens], decoded with a KV cache under one routing context.

        Needs a left-padded batch so that every row's next token goes at the same column. Without ``stop``
        decoding never stops early: exact-match scoring compares a fixed number of tokens. ``stop`` maps the
        tokens generated so far ([B, t]) to the rows that are complete ([B] bool); decoding ends once every
        row has been, so the result may have fewer columns. Greedy decoding does not look ahead, so a row up
        to where it completed is exactly what the full-length decode gives (free-generation scoring cuts
        each row there anyway).
        """
        if batch.padding_side != "left":
            raise ValueError("generate() needs a left-padded PromptBatch")
        batch = batch.to(self.device)
        attention = batch.attention_mask
        positions = batch.position_ids
        tokens: list[torch.Tensor] = []
        complete = torch.zeros(len(batch), dtype=torch.bool)
        with self.routing(batch):
            out = self.model(
                input_ids=batch.input_ids, attention_mask=attention, position_ids=positions, use_cache=True
            )
            for step in range(max_new_tokens):
                next_token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                tokens.append(next_token)
                if step == max_new_tokens - 1:
                    break
                if stop is not None:
                    complete |= stop(torch.cat(tokens, dim=1)).cpu()
                    if bool(complete.all()):
                        break
                attention = torch.cat([attention, torch.ones_like(next_token)], dim=1)
                positions = positions[:, -1:] + 1
                out = self.model(
                    input_ids=next_token,
                    attention_mask=attention,
                    position_ids=positions,
                    use_cache=True,
                    **_cache_kwargs(self.model, out),
                )
        if not tokens:
            return batch.input_ids.new_zeros((len(batch), 0))
        return torch.cat(tokens, dim=1)

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The edit state only (never the base weights): memories, masks, codebooks, changed weights."""
        return {}

    def state_metadata(self) -> dict[str, Any]:
        """JSON-serialisable part of the edit state (counters, key labels, thresholds...)."""
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
        """Restore a state saved by :meth:`state_dict`/:meth:`state_metadata`; logits must match exactly."""
        if tensors:
            raise EditkitError(f"{type(self).__name__} has no edit state but was given {sorted(tensors)}")

    def save_state(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(directory / STATE_TENSORS))
        meta = {"editor": self.name, "config": self.config.to_dict(), "state": self.state_metadata()}
        (directory / STATE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def load_state(self, directory: str | Path) -> None:
        directory = Path(directory)
        tensor_file, meta_file = directory / STATE_TENSORS, directory / STATE_META
        for f in (tensor_file, meta_file):
            if not f.is_file():
                raise EditkitError(f"{f}: no saved editor state here")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise EditkitError(f"{meta_file}: corrupted editor state ({first_line(exc)})") from None
        if isinstance(meta, dict) and not isinstance(meta.get("state", {}), dict):
            raise EditkitError(f"{meta_file}: corrupted editor state ('state' is a {type(meta['state']).__name__}, not an object)")
        if not isinstance(meta, dict) or meta.get("editor") != self.name:
            editor = meta.get("editor") if isinstance(meta, dict) else None
            raise EditkitError(f"{meta_file}: state of editor '{editor}', not '{self.name}'")
        try:
            tensors = {k: v.to(self.device) for k, v in load_file(str(tensor_file)).items()}
        except Exception as exc:  # safetensors reports a damaged file with its own exception types
            raise EditkitError(f"{tensor_file}: corrupted editor state ({first_line(exc)})") from None
        try:
            self.load_state_dict(tensors, meta.get("state", {}))
        except EditkitError as exc:
            raise EditkitError(f"{directory}: {exc}") from None
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            # a state that parses but does not fit this editor (another model, another config)
            raise EditkitError(f"{directory}: state does not fit this {self.name} editor ({first_line(exc)})") from None


def check_required_fields(method: str, editor_class: type[Editor], requests: Sequence[EditRequest]) -> None:
    """Refuse a stream in which a request lacks a field ``editor_class`` declares it needs, naming the first
    such request; called before the first edit, so a missing subject never fails hours into a stream."""
    for field_name in editor_class.required_fields:
        for request in requests:
            value = getattr(request, field_name, None)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise EditkitError(f"method '{method}' needs '{field_name}' in every request; request '{request.id}' has none")
