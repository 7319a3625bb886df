"""EasyEdit hparams files (``hparams/<METHOD>/<model>.yaml``) read as editkit method configs.

People arrive with the files of EasyEdit and of the papers' forks of it. Each method's config class says in
a table, ``easyedit_keys``, what each EasyEdit key of that method means for its own fields; this module only
reads the file and applies the table, so it never names a method and a new method brings its own table.

A table maps an EasyEdit key to a field name (the value is taken as is and checked by the config), to
``None`` (a key editkit knows and does not need, reported as not used), or to a converter
``(value, whole file) -> {field: value}`` for keys whose meaning is not one field (a layer index that needs
a path template, a flag that picks an objective). Keys in no table are refused by name: a typo must not
silently leave an official value in place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from .editor import Converter, EditorConfig, KeyTable
from .errors import ConfigError, EditkitError, first_line
from .files import read_text

__all__ = ["Converter", "KeyTable", "choice", "config_overrides", "module_from_inner_params", "module_from_layers", "only", "read_hparams"]

#: keys every EasyEdit file carries about the run, not the method; editkit has its own options for them
RUN_KEYS = frozenset({"alg_name", "model_name", "device", "model_parallel", "batch_size", "max_length", "use_chat_template"})

#: hparams files are a few dozen keys; anything this large is not one
MAX_HPARAMS_BYTES = 1 << 20
#: values an hparams file may expand to, aliases (``*name``) counted at every use: an alias bomb (266 bytes
#: expanding to millions of items, and to a many-megabyte error line) is refused before it is built
MAX_YAML_NODES = 10_000

_INDEX = re.compile(r"\[(\d+)\]")


def read_hparams(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML (or JSON) hparams file."""
    import yaml

    try:
        text = read_text(Path(path), f"--hparams {path}", MAX_HPARAMS_BYTES)
    except (OSError, UnicodeDecodeError) as exc:
        raise EditkitError(f"--hparams {path}: cannot read ({first_line(exc)})") from None
    try:
        size = _expanded_size(yaml.compose(text, Loader=yaml.SafeLoader), {})
        if size > MAX_YAML_NODES:
            raise EditkitError(f"--hparams {path}: expands to {size} YAML values (through its aliases), more than the {MAX_YAML_NODES} editkit reads")
        data = yaml.safe_load(text)
    except RecursionError:
        raise EditkitError(f"--hparams {path}: nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise EditkitError(f"--hparams {path}: invalid YAML{where}: {getattr(exc, 'problem', None) or first_line(exc)}") from None
    if not isinstance(data, dict):
        raise EditkitError(f"--hparams {path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoised: a bomb costs its size in
    nodes, not its expansion)."""
    if node is None:
        return 0
    if id(node) not in memo:
        memo[id(node)] = 1  # a recursive alias counts once
        value = node.value
        children = [c for pair in value for c in (pair if isinstance(pair, tuple) else (pair,))] if isinstance(value, list) else []
        memo[id(node)] = 1 + sum(_expanded_size(c, memo) for c in children)
    return memo[id(node)]


def config_overrides(config_class: type[EditorConfig], hparams: Mapping[str, Any], source: str, method: str) -> tuple[dict[str, Any], list[str]]:
    """The config overrides an hparams file means for ``method``, and the keys it holds that editkit does
    not use. Overrides are checked when the config is built from them, like ``--set`` values."""
    table = config_class.easyedit_keys
    if not table:
        raise ConfigError(f"--hparams {source}: method '{method}' does not read EasyEdit hparams")
    algorithm, accepted = hparams.get("alg_name"), config_class.easyedit_alg_names
    if algorithm is not None and accepted and str(algorithm).upper() not in accepted:
        raise ConfigError(f"--hparams {source}: hparams of alg_name '{algorithm}', not of {method} ({', '.join(accepted)})")
    overrides: dict[str, Any] = {}
    unused: list[str] = []
    for key, value in hparams.items():
        if key not in table and key not in RUN_KEYS:
            known = ", ".join(sorted(set(table) | RUN_KEYS))
            raise ConfigError(f"--hparams {source}: unknown key '{key}' for {method}; known keys: {known}")
        rule = table.get(key)
        if rule is None:
            unused.append(key)
        elif isinstance(rule, str):
            overrides[rule] = value
        else:
            try:
                overrides.update(rule(value, hparams))
            except ConfigError as exc:
                raise ConfigError(f"--hparams {source}: key '{key}': {exc}") from None
    return overrides, unused


# ------------------------------------------------------------------------ converters for the tables
def _module_path(parameter: Any) -> str:
    """``model.layers[27].mlp.down_proj.weight`` (EasyEdit names a weight) → ``model.layers.27.mlp.down_proj``."""
    if not isinstance(parameter, str) or not parameter.strip():
        raise ConfigError(f"expected a parameter name such as model.layers[27].mlp.down_proj.weight, not {parameter!r}")
    return _INDEX.sub(r".\1", parameter.strip()).removesuffix(".weight").removesuffix(".bias")


def _single(value: Any, what: str) -> Any:
    items = value if isinstance(value, list) else [value]
    if len(items) != 1:
        raise ConfigError(f"editkit edits one {what}, got {len(items)}: {items}")
    return items[0]


def module_from_inner_params(field: str) -> Converter:
    """``inner_params: [model.layers[27].mlp.down_proj.weight]`` → ``{field: 'model.layers.27.mlp.down_proj'}``."""
    return lambda value, _hparams: {field: _module_path(_single(value, "module"))}


def module_from_layers(field: str, template_key: str = "rewrite_module_tmp") -> Converter:
    """``layers: [21]`` with ``rewrite_module_tmp: model.layers.{}.mlp.down_proj.weight`` → ``{field: path}``."""

    def convert(value: Any, hparams: Mapping[str, Any]) -> dict[str, Any]:
        layer = _single(value, "layer")
        template = hparams.get(template_key)
        if not isinstance(template, str) or "{}" not in template:
            raise ConfigError(f"needs '{template_key}', a module name with {{}} for the layer, e.g. model.layers.{{}}.mlp.down_proj.weight")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ConfigError(f"expected a layer index, not {layer!r}")
        return {field: _module_path(template.format(layer))}

    return convert


def only(*supported: Any) -> Converter:
    """A key whose supported values are what editkit always does: accepted, nothing to set; others refused."""

    def convert(value: Any, _hparams: Mapping[str, Any]) -> dict[str, Any]:
        if value not in supported:
            raise ConfigError(f"{value!r} is not supported; editkit implements {' or '.join(map(repr, supported))}")
        return {}

    return convert


def choice(field: str, meanings: Mapping[Any, Any]) -> Converter:
    """A key whose EasyEdit values name one of this field's values (e.g. an objective)."""

    def convert(value: Any, _hparams: Mapping[str, Any]) -> dict[str, Any]:
        if value not in meanings:
            raise ConfigError(f"{value!r} is not one of {', '.join(map(repr, meanings))}")
        return {field: meanings[value]}

    return convert
