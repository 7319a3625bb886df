"""Name → editor class, for built-ins (decorator) and third-party packages (entry points).

A third-party package exposes ``[project.entry-points."editkit.editors"] myname = "pkg.module:MyEditor"``;
nothing in editkit has to change for it to show up in ``editkit methods`` and ``editkit compare``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

from .editor import Editor, EditorConfig
from .errors import EditkitError

ENTRY_POINT_GROUP = "editkit.editors"
E = TypeVar("E", bound=type[Editor])


@dataclass(frozen=True)
class EditorSpec:
    """A registered name: the class plus config defaults that differ from the class's own."""

    name: str
    editor_class: type[Editor]
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = "built-in"

    def make_config(self, **overrides: Any) -> EditorConfig:
        config = self.editor_class.config_class()
        if self.defaults:
            config = config.override(**self.defaults)
        return config.override(**overrides) if overrides else config

    def build(self, model: Any, tokenizer: Any, config: EditorConfig | None = None) -> Editor:
        editor = self.editor_class(model, tokenizer, config if config is not None else self.make_config())
        editor.name = self.name  # instance attribute: one class may serve several names
        return editor


_REGISTRY: dict[str, EditorSpec] = {}
_LOADED_ENTRY_POINTS = False


def register_editor(name: str, **defaults: Any) -> Callable[[E], E]:
    """Class decorator; ``defaults`` pre-set config fields so one class can serve several names."""

    def decorate(cls: E) -> E:
        if name in _REGISTRY and _REGISTRY[name].editor_class is not cls:
            raise ValueError(f"editor name '{name}' is already registered by {_REGISTRY[name].editor_class}")
        if "name" not in cls.__dict__:
            cls.name = name
        _REGISTRY[name] = EditorSpec(name, cls, dict(defaults))
        return cls

    return decorate


def _load_builtins_and_plugins() -> None:
    global _LOADED_ENTRY_POINTS
    import editkit.methods  # noqa: F401  (registers the built-in methods)

    if _LOADED_ENTRY_POINTS:
        return
    _LOADED_ENTRY_POINTS = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-ins down
            raise EditkitError(f"entry point '{ep.name}' ({ep.value}) failed to load: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Editor)):
            raise EditkitError(f"entry point '{ep.name}' ({ep.value}) is not an editkit Editor subclass")
        _REGISTRY[ep.name] = EditorSpec(ep.name, cls, {}, source=f"plugin {ep.value}")


def available_editors() -> dict[str, EditorSpec]:
    _load_builtins_and_plugins()
    return dict(sorted(_REGISTRY.items()))


def get_editor_spec(name: str) -> EditorSpec:
    editors = available_editors()
    if name not in editors:
        raise EditkitError(f"unknown method '{name}'; known methods: {', '.join(editors)}")
    return editors[name]
