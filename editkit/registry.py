"""Name → editor, for every method: built-in or third-party, all found through the same entry points.

A method package exposes ``[project.entry-points."editkit.editors"] myname = "pkg.module:MyEditor"`` (an
:class:`~editkit.editor.Editor` subclass) or ``"pkg.module:VARIANT"`` (an :class:`EditorVariant`: a class
with config defaults, for one class serving several names, or a method that is part of the default
comparison). editkit's own methods are declared the same way in its pyproject.toml, so this module names no
method and imports none: an entry point is loaded the first time its name is asked for. A plugin whose
import fails is remembered with its one-line reason (``editkit methods`` lists it) and stops only the
commands that use it.

:func:`register_editor` adds an editor at run time (tests, notebooks) without packaging it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, distributions
from typing import Any, Callable, Sequence, TypeVar

from .editor import Editor, EditorConfig, check_required_fields
from .errors import EditkitError, first_line
from .requests import EditRequest

ENTRY_POINT_GROUP = "editkit.editors"
E = TypeVar("E", bound=type[Editor])


@dataclass(frozen=True)
class EditorVariant:
    """What an entry point may name instead of a bare class: the class, config defaults that differ from
    the class's own, and its place in the default comparison (``default_rank``: ``editkit compare`` with no
    ``--methods`` runs every variant that has one, lowest first; None = only when asked for)."""

    editor_class: type[Editor]
    defaults: dict[str, Any] = field(default_factory=dict)
    default_rank: int | None = None


@dataclass(frozen=True)
class EditorSpec:
    """A registered name: the class plus config defaults that differ from the class's own."""

    name: str
    editor_class: type[Editor]
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = "built-in"
    default_rank: int | None = None

    def make_config(self, **overrides: Any) -> EditorConfig:
        config = self.editor_class.config_class()
        if self.defaults:
            config = config.override(**self.defaults)
        return config.override(**overrides) if overrides else config

    def build(self, model: Any, tokenizer: Any, config: EditorConfig | None = None) -> Editor:
        editor = self.editor_class(model, tokenizer, config if config is not None else self.make_config())
        editor.name = self.name  # the one place an editor's name is set
        return editor

    def check_requests(self, requests: Sequence[EditRequest]) -> None:
        """Every request carries the fields this method declares it needs (one line naming the first that
        does not)."""
        check_required_fields(self.name, self.editor_class, requests)


_REGISTRY: dict[str, EditorSpec] = {}
#: entry points that failed to load: name -> one line saying why
_FAILED: dict[str, str] = {}
_ALL_LOADED = False


def register_editor(name: str, **defaults: Any) -> Callable[[E], E]:
    """Class decorator for an editor defined at run time; ``defaults`` pre-set config fields."""

    def decorate(cls: E) -> E:
        if name in _REGISTRY and _REGISTRY[name].editor_class is not cls:
            raise ValueError(f"editor name '{name}' is already registered by {_REGISTRY[name].editor_class}")
        _REGISTRY[name] = EditorSpec(name, cls, dict(defaults), source="registered")
        return cls

    return decorate


def _entry_points() -> dict[str, EntryPoint]:
    """The group's entry points of every distribution on the path, the first to claim a name keeping it.

    Every distribution is read, not one per project name as ``entry_points()`` does: a stale
    ``editkit.egg-info`` left in a checkout (found first when Python runs from there) must not hide the
    entry points of the installed editkit."""
    found: dict[str, EntryPoint] = {}
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found.setdefault(ep.name, ep)
    return found


def _source(ep: EntryPoint) -> str:
    distribution = getattr(getattr(ep, "dist", None), "name", None)
    return "built-in" if distribution == "editkit" else f"plugin {ep.value}"


def _load(ep: EntryPoint) -> None:
    """Register one entry point, or remember in one line why it could not be."""
    try:
        target = ep.load()
    except Exception as exc:  # a broken plugin must not take the other methods down
        _FAILED[ep.name] = f"entry point '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {first_line(exc)}"
        return
    if isinstance(target, EditorVariant):
        cls, defaults, rank = target.editor_class, dict(target.defaults), target.default_rank
    else:
        cls, defaults, rank = target, {}, None
    if not (isinstance(cls, type) and issubclass(cls, Editor)):
        _FAILED[ep.name] = f"entry point '{ep.name}' ({ep.value}) is neither an editkit Editor subclass nor an EditorVariant"
        return
    _REGISTRY[ep.name] = EditorSpec(ep.name, cls, defaults, source=_source(ep), default_rank=rank)


def _load_all() -> None:
    global _ALL_LOADED
    if _ALL_LOADED:
        return
    _ALL_LOADED = True
    for name, ep in _entry_points().items():
        if name not in _REGISTRY and name not in _FAILED:
            _load(ep)


def available_editors() -> dict[str, EditorSpec]:
    """Every editor that loads, by name (loading every entry point on the first call)."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def failed_editors() -> dict[str, str]:
    """Entry points that could not be loaded, by name, with the reason in one line."""
    _load_all()
    return dict(sorted(_FAILED.items()))


def get_editor_spec(name: str) -> EditorSpec:
    """The editor registered as ``name``, loading only its own entry point."""
    if name not in _REGISTRY and name not in _FAILED:
        ep = _entry_points().get(name)
        if ep is not None:
            _load(ep)
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _FAILED:
        raise EditkitError(_FAILED[name])
    known = available_editors()
    hint = "" if any(spec.source == "built-in" for spec in known.values()) else (
        " (editkit's own entry points are missing: reinstall it, e.g. pip install -e .)"
    )
    raise EditkitError(f"unknown method '{name}'; known methods: {', '.join(known) or 'none'}{hint}")


def baseline_names() -> list[str]:
    """The registered editors that declare themselves the unedited baseline (``Editor.is_baseline``)."""
    return [name for name, spec in available_editors().items() if spec.editor_class.is_baseline]


def default_comparison() -> list[str]:
    """The methods ``editkit compare`` runs when no ``--methods`` is given, in their declared order."""
    ranked = [(spec.default_rank, name) for name, spec in available_editors().items() if spec.default_rank is not None]
    return [name for _, name in sorted(ranked)]
