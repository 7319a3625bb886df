"""A grid plan (YAML) and its expansion into cells: one cell = one method's edit stream = one run directory.

A plan names axes (models × datasets × methods × seeds × schedules) and settings every cell shares. Each
cell gets a stable readable name built from its axis values (``default__default-0-20__memoir__seed0``), so
the same plan always gives the same directories, and a plan extended with new values keeps the old names.

Per (model, dataset slice, schedule) one extra cell, the unedited ``none`` row, is run once and shared by
every method cell of that group: it also computes the pre-edit reference predictions the method cells'
locality scores compare with (see :mod:`editkit.grid.cell`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from editkit.errors import EditkitError

NONE = "none"
KNOWN_KEYS = (
    "models", "datasets", "methods", "set", "seeds", "schedule", "scorers", "resources",
    "threads", "dtype", "device", "batch_size", "checkpoint_every",
)  # fmt: skip
DATASET_KEYS = ("data", "start", "num_edits", "columns", "shuffle")
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")


@dataclass(frozen=True)
class Cell:
    """Everything that decides one cell's numbers (its ``key``) plus its name, group and resources."""

    name: str
    group: str  # the name of the group's ``none`` cell (itself, for a none cell)
    method: str  # the registered method
    variant: str  # the row label: the method, or a named variant of it
    overrides: dict[str, Any]
    setup: dict[str, Any]  # api.Setup fields
    labels: dict[str, str]  # model, dataset, schedule, seed as shown in tables
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def is_none(self) -> bool:
        return self.method == NONE

    @property
    def key(self) -> str:
        """What must not change for a finished cell to still be this cell."""
        return _digest({"method": self.method, "overrides": self.overrides, "setup": self.setup})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Cell":
        return cls(**data)


@dataclass(frozen=True)
class Plan:
    source: Path | None
    data: dict[str, Any]  # the normalised plan (every default filled in), as stored in grid.json
    cells: tuple[Cell, ...]

    @property
    def hash(self) -> str:
        return _digest(self.data)

    def cell(self, name: str) -> Cell:
        return next(c for c in self.cells if c.name == name)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def read_plan(path: Path, threads: int | None = None) -> Plan:
    """Read and expand a plan file; every mistake is one line naming the file and the key."""
    from editkit.easyedit import read_hparams

    raw = read_hparams(path, label=str(path))
    return expand(raw, path, threads)


def expand(raw: Any, source: Path | None = None, threads: int | None = None) -> Plan:
    """The normalised plan and its cells. Relative data and model paths are taken from the plan's directory."""
    where = str(source) if source is not None else "plan"

    def fail(message: str) -> EditkitError:
        return EditkitError(f"{where}: {message}")

    if not isinstance(raw, dict):
        raise fail("expected a mapping of plan keys (models, datasets, methods, ...)")
    unknown = [k for k in raw if k not in KNOWN_KEYS]
    if unknown:
        raise fail(f"unknown key '{unknown[0]}'; known keys: {', '.join(KNOWN_KEYS)}")
    base = source.parent if source is not None else Path(".")
    models = [_model(m, base) for m in _list(raw, "models", fail, required=True)]
    datasets = [_dataset(d, base, fail) for d in _list(raw, "datasets", fail, default=[{"data": "default"}])]
    variants = [_variant(m, fail) for m in _list(raw, "methods", fail, required=True)]
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        raise fail(f"methods: '{next(n for n in names if names.count(n) > 1)}' is listed twice; name the variants")
    sets = raw.get("set") or {}
    if not isinstance(sets, dict) or not all(isinstance(v, dict) for v in sets.values()):
        raise fail("set: expected {METHOD: {KEY: VALUE}}")
    for name in sets:
        if name not in names and name not in {v["method"] for v in variants}:
            raise fail(f"set: '{name}' is not one of the plan's methods ({', '.join(names)})")
    seeds = _list(raw, "seeds", fail, default=[0])
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
        raise fail(f"seeds: expected distinct integers, got {seeds}")
    schedules = [str(s) for s in _list(raw, "schedule", fail, default=["final"])]
    scorers = raw.get("scorers", ["tf", "gen"])
    scorers = ",".join(scorers) if isinstance(scorers, list) else str(scorers)
    resources = raw.get("resources") or {"num_cpus": 1, "num_gpus": 0}
    if not isinstance(resources, dict) or any(k not in RESOURCE_KEYS for k in resources):
        raise fail(f"resources: expected a mapping of {', '.join(RESOURCE_KEYS)}")
    if threads is None:
        threads = raw.get("threads", max(1, int(resources.get("num_cpus", 1))))
    common = {
        "device": raw.get("device", "cpu"),
        "dtype": raw.get("dtype", "float32"),
        "batch_size": raw.get("batch_size", 16),
        "checkpoint_every": raw.get("checkpoint_every", 10),
        "threads": threads,
        "scorers": scorers,
    }
    for name, value in common.items():
        if name in ("batch_size", "checkpoint_every", "threads") and (not isinstance(value, int) or value < 1):
            raise fail(f"{name}: expected an integer >= 1, got {value!r}")
    for variant in variants:
        variant["set"] = {**sets.get(variant["method"], {}), **variant["set"], **(sets.get(variant["name"], {}) if variant["name"] != variant["method"] else {})}
    data = {
        "models": models,
        "datasets": datasets,
        "methods": variants,
        "seeds": seeds,
        "schedule": schedules,
        "resources": resources,
        **common,
    }
    cells = _cells(data)
    return Plan(source, data, tuple(cells))


def _list(raw: dict, key: str, fail: Any, required: bool = False, default: Any = None) -> list[Any]:
    if key not in raw:
        if required:
            raise fail(f"missing key '{key}'")
        return list(default)
    value = raw[key]
    value = value if isinstance(value, list) else [value]
    if not value:
        raise fail(f"{key}: is empty")
    return value


def _model(value: Any, base: Path) -> str:
    from editkit.models import DEFAULT_ALIASES

    text = str(value)
    if text in DEFAULT_ALIASES:
        return text
    path = Path(text).expanduser()
    candidate = path if path.is_absolute() else base / path
    return str(candidate.resolve()) if candidate.exists() else text  # else a hub id (checked by the cell)


def _dataset(value: Any, base: Path, fail: Any) -> dict[str, Any]:
    from editkit.data import DATA_NAMES

    entry = {"data": value} if isinstance(value, str) else value
    if not isinstance(entry, dict) or "data" not in entry:
        raise fail(f"datasets: expected a name, a path or {{data: ..., start: ..., num_edits: ...}}, got {value!r}")
    unknown = [k for k in entry if k not in DATASET_KEYS]
    if unknown:
        raise fail(f"datasets: unknown key '{unknown[0]}'; known keys: {', '.join(DATASET_KEYS)}")
    data = str(entry["data"])
    if data not in DATA_NAMES:
        path = Path(data).expanduser()
        data = str(path if path.is_absolute() else (base / path).resolve())
    for name in ("start", "num_edits"):
        if name in entry and entry[name] is not None and (not isinstance(entry[name], int) or isinstance(entry[name], bool)):
            raise fail(f"datasets: {name} must be an integer, got {entry[name]!r}")
    return {"data": data, "start": entry.get("start", 0), "num_edits": entry.get("num_edits"), "columns": entry.get("columns"), "shuffle": bool(entry.get("shuffle", False))}


def _variant(value: Any, fail: Any) -> dict[str, Any]:
    """A method by name, or a named variant ``{name: memoir-big, method: memoir, set: {...}}``."""
    if isinstance(value, str):
        if value == NONE:
            raise fail("methods: 'none' is always run once per model and dataset; leave it out")
        return {"name": value, "method": value, "set": {}}
    if not isinstance(value, dict) or "method" not in value:
        raise fail(f"methods: expected a method name or {{name: ..., method: ..., set: {{...}}}}, got {value!r}")
    extra = [k for k in value if k not in ("name", "method", "set")]
    if extra:
        raise fail(f"methods: unknown key '{extra[0]}' in {value!r}")
    return {"name": str(value.get("name", value["method"])), "method": str(value["method"]), "set": dict(value.get("set") or {})}


def label(text: str) -> str:
    """A directory-safe piece of a cell name."""
    return re.sub(r"[^A-Za-z0-9.+=-]+", "-", text).strip("-") or "x"


def _model_label(model: str) -> str:
    return label(Path(model).name if "/" in model and Path(model).exists() else model)


def _dataset_label(entry: dict[str, Any]) -> str:
    stem = Path(entry["data"]).stem if "/" in entry["data"] else entry["data"]
    end = "" if entry["num_edits"] is None else str(entry["start"] + entry["num_edits"])
    return label(f"{stem}-{entry['start']}-{end}" + ("-shuffled" if entry["shuffle"] else ""))


def _cells(plan: dict[str, Any]) -> list[Cell]:
    """Every cell of the plan, each group's ``none`` cell before its method cells."""
    cells: list[Cell] = []
    many_schedules = len(plan["schedule"]) > 1
    shared = {k: plan[k] for k in ("device", "dtype", "batch_size", "checkpoint_every", "threads", "scorers")}
    for model in plan["models"]:
        for entry in plan["datasets"]:
            for schedule in plan["schedule"]:
                # with shuffle the stream itself depends on the seed: one unedited row per seed then
                for group_seed in plan["seeds"] if entry["shuffle"] else [plan["seeds"][0]]:
                    parts = [_model_label(model), _dataset_label(entry)] + ([label(schedule)] if many_schedules else [])
                    labels = {"model": model, "dataset": _dataset_label(entry), "schedule": schedule}
                    setup = {
                        "data": entry["data"], "columns": entry["columns"], "num_edits": entry["num_edits"],
                        "start": entry["start"], "shuffle": entry["shuffle"], "schedule": schedule, "model": model,
                        "progress": False, **shared,
                    }  # fmt: skip
                    suffix = [f"seed{group_seed}"] if entry["shuffle"] else []
                    group = "__".join(parts + [NONE] + suffix)
                    cells.append(Cell(group, group, NONE, NONE, {}, {**setup, "seed": group_seed}, {**labels, "seed": str(group_seed)}, plan["resources"]))
                    for variant in plan["methods"]:
                        for seed in plan["seeds"] if not entry["shuffle"] else [group_seed]:
                            name = "__".join(parts + [label(variant["name"]), f"seed{seed}"])
                            cells.append(
                                Cell(name, group, variant["method"], variant["name"], variant["set"], {**setup, "seed": seed}, {**labels, "seed": str(seed)}, plan["resources"])
                            )
    names = [c.name for c in cells]
    if len(set(names)) != len(names):  # two models or files with the same short name: make them unique
        cells = [_with_hash(c) if names.count(c.name) > 1 else c for c in cells]
    return cells


def _with_hash(cell: Cell) -> Cell:
    tag = _digest([cell.setup["model"], cell.setup["data"]])[:6]
    rename = lambda n: n.replace("__", f"-{tag}__", 1)  # noqa: E731
    return Cell(**{**cell.to_dict(), "name": rename(cell.name), "group": rename(cell.group)})


def check_cells(plan: Plan) -> None:
    """Check what can be checked without loading a model: methods, their configs, schedules, scorers, and
    every dataset slice, so a typo stops the grid before any cell runs."""
    from editkit import api
    from editkit.data import load_requests, parse_columns
    from editkit.evaluation.schedules import Schedule
    from editkit.evaluation.scorers import parse_scorers
    from editkit.evaluation.streams import make_stream

    where = str(plan.source) if plan.source is not None else "plan"
    seen: set[tuple[str, str]] = set()
    for cell in plan.cells:
        try:
            api.method_configs([api.MethodChoice(cell.method, cell.overrides)])
            Schedule.parse(cell.setup["schedule"])
            parse_scorers(cell.setup["scorers"])
            slice_key = (cell.setup["data"], json.dumps([cell.setup["start"], cell.setup["num_edits"], cell.setup["shuffle"], cell.setup["seed"], cell.setup["columns"]]))
            if slice_key not in seen:
                seen.add(slice_key)
                columns = parse_columns(cell.setup["columns"]) if cell.setup["columns"] else None
                requests = load_requests(cell.setup["data"], columns=columns)
                num = cell.setup["num_edits"]
                if num is None and cell.setup["data"] == api.DEFAULT_DATA:
                    num = min(api.DEFAULT_NUM_EDITS, len(requests))
                make_stream(requests, num, cell.setup["seed"] if cell.setup["shuffle"] else None, cell.setup["start"])
        except EditkitError as exc:
            raise EditkitError(f"{where}: cell {cell.name}: {exc}") from None
