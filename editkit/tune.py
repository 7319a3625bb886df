"""``editkit tune``: choose a method's config on a dev slice, then report it on a test slice it never saw.

The rule of the project (DESIGN §7) is that no reported number comes from the slice a config was tuned on.
This module makes that mechanical: the two slices are loaded and compared *before anything runs*, and
slices that share a request (by id or by prompt) are refused; the grid runs on the dev slice only; the
chosen config alone runs on the test slice, whose ``config.json`` records the dev slice, the grid, the
criterion and every dev score, and whose summary rows say "tuned on <dev slice>" (so every report caption
does too).

Layout of ``--out``: ``dev/<KEY=VALUE,...>/`` one run directory per grid point, ``test/`` a comparison of
the unedited model and the chosen config (what ``editkit report`` reads), ``tune.json`` the selection.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import EditkitError

#: criterion -> the metrics whose mean it is (``mean``: the tables' Mean column)
CRITERIA: dict[str, tuple[str, ...]] = {
    "mean": ("reliability", "generalization", "locality"),
    "rel": ("reliability",),
    "gen": ("generalization",),
    "loc": ("locality",),
}
TUNE_FILE = "tune.json"
_SLICE = re.compile(r"^(?P<data>.+?)(?:@(?P<start>\d+):(?P<count>\d+))?$")


@dataclass(frozen=True)
class Slice:
    """``NAME[@START:COUNT]``: a bundled name or a data file, optionally COUNT requests from START."""

    text: str
    data: str
    start: int = 0
    count: int | None = None

    def options(self) -> dict[str, Any]:
        """The run options that select this slice."""
        return {"data": self.data, "start": self.start, "num_edits": self.count, "shuffle": False}


def parse_slice(text: str, option: str) -> Slice:
    match = _SLICE.match(text.strip())
    if not text.strip() or match is None:
        raise EditkitError(f"{option} {text!r}: expected a bundled name or data file, optionally followed by @START:COUNT")
    count = match["count"]
    if count is not None and int(count) < 1:
        raise EditkitError(f"{option} {text}: COUNT must be at least 1")
    return Slice(text.strip(), match["data"], int(match["start"] or 0), int(count) if count is not None else None)


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``("tau=0.45,0.5", "lr=1,2")`` -> ``{"tau": ["0.45", "0.5"], "lr": ["1", "2"]}``; the method's
    config parses each value (``--set`` rules), so a bad value is refused before anything runs."""
    if not items:
        raise EditkitError("--grid: give at least one KEY=V1,V2,... (e.g. --grid tau=0.45,0.5,0.55)")
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        listed = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not listed:
            raise EditkitError(f"--grid {item}: expected KEY=V1,V2,...")
        if key in grid:
            raise EditkitError(f"--grid {item}: key '{key}' is given twice")
        if len(set(listed)) != len(listed):
            raise EditkitError(f"--grid {item}: a value is listed twice")
        grid[key] = listed
    return grid


def grid_points(grid: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination, in the order given (the first key varies slowest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


def check_disjoint(dev: Sequence[Any], test: Sequence[Any], dev_slice: Slice, test_slice: Slice) -> None:
    """Refuse a dev and a test slice that share a request, by id or by prompt."""
    ids = {r.id for r in dev}
    prompts = {r.prompt for r in dev}
    for request in test:
        if request.id in ids or request.prompt in prompts:
            shared = f"request '{request.id}'" if request.id in ids else f"the prompt {request.prompt!r} (request '{request.id}')"
            raise EditkitError(
                f"--dev {dev_slice.text} and --test {test_slice.text} share {shared}; a config tuned on the test slice "
                "would be reported on it: choose disjoint slices"
            )


def criterion_value(rows: Sequence[Any], criterion: str, scorer: str) -> float:
    """The criterion's value from a run's summary rows at its last step (mean of the criterion's metrics)."""
    last = max(r.step for r in rows)
    means = {r.metric: r.mean for r in rows if r.step == last and r.scorer == scorer}
    missing = [m for m in CRITERIA[criterion] if m not in means]
    if missing:
        raise EditkitError(f"--criterion {criterion}: the dev run has no {', '.join(missing)} scores under {scorer}")
    return sum(means[m] for m in CRITERIA[criterion]) / len(CRITERIA[criterion])


def select(scores: Sequence[tuple[dict[str, str], float]]) -> dict[str, str]:
    """The point with the highest dev score; a tie goes to the earlier point of the grid (deterministic)."""
    best = max(range(len(scores)), key=lambda i: (scores[i][1], -i))
    return scores[best][0]


@dataclass
class TuneResult:
    chosen: dict[str, str]
    dev_scores: list[dict[str, Any]]
    test_rows: list[Any]
    out: Path


#: builds a validated, locked run for options and (spec, config) runs: the CLI's run assembly
Prepare = Callable[[dict[str, Any], list[tuple[Any, Any]]], Any]


def tune(
    method: str,
    grid: Mapping[str, Sequence[str]],
    dev: Slice,
    test: Slice,
    criterion: str,
    opts: Mapping[str, Any],
    prepare: Prepare,
) -> TuneResult:
    """Run ``grid`` on ``dev``, select by ``criterion`` (on the first of the run's scorers), run the
    chosen config with the unedited reference on ``test``; nothing runs if the slices overlap or any grid
    value is refused by the method's config."""
    from editkit.data import load_requests, parse_columns
    from editkit.evaluation.store import write_json_atomic
    from editkit.evaluation.streams import make_stream
    from editkit.registry import get_editor_spec

    from .cli import DEFAULT_DATA, DEFAULT_NUM_EDITS

    if criterion not in CRITERIA:
        raise EditkitError(f"--criterion {criterion}: one of {', '.join(CRITERIA)}")
    spec, reference = get_editor_spec(method), get_editor_spec("none")
    points = grid_points(grid)
    configs = [spec.make_config(**point) for point in points]  # a bad key or value, before anything runs
    columns = parse_columns(opts["columns"]) if opts.get("columns") else None
    streams = []
    for slice_ in (dev, test):
        count = slice_.count if slice_.count is not None or slice_.data != DEFAULT_DATA else DEFAULT_NUM_EDITS
        streams.append(make_stream(load_requests(slice_.data, columns=columns), count, None, slice_.start).requests)
    check_disjoint(*streams, dev, test)
    out = Path(opts["out"])
    scorer = str(opts["scorers"]).split(",")[0].strip()

    prepared = prepare({**opts, **dev.options(), "out": out / "dev"}, [(spec, c) for c in configs])
    dev_scores: list[dict[str, Any]] = []
    with prepared.lock:
        harness = prepared.harness
        harness.record = {**harness.record, "tuning": {"role": "dev", "grid": dict(grid), "criterion": criterion}}
        for point, config in zip(points, configs):
            rows = harness.run(spec, config, prepared.out / point_name(point))
            dev_scores.append(
                {
                    "config": point,
                    "score": criterion_value(rows, criterion, scorer),
                    "means": {f"{r.scorer} {r.metric}": r.mean for r in rows if r.step == max(x.step for x in rows)},
                    "directory": str(prepared.out / point_name(point)),
                }
            )
    chosen = select([(d["config"], d["score"]) for d in dev_scores])
    tuning = {
        "dev": dev.text,
        "dev_stream": harness.stream.hash,
        "test": test.text,
        "grid": dict(grid),
        "criterion": criterion,
        "criterion_scorer": scorer,
        "dev_scores": dev_scores,
        "chosen": chosen,
    }
    config = configs[points.index(chosen)]
    prepared = prepare({**opts, **test.options(), "out": out / "test"}, [(reference, reference.make_config()), (spec, config)])
    rows: list[Any] = []
    with prepared.lock:
        harness = prepared.harness
        harness.prepare()
        base_protocol, base_record = dict(harness.protocol), dict(harness.record)
        for run_spec, run_config, tuned in ((reference, reference.make_config(), False), (spec, config, True)):
            harness.protocol = {**base_protocol, **({"tuned_on": dev.text} if tuned else {})}
            harness.record = {**base_record, **({"tuning": tuning} if tuned else {})}
            rows += harness.run(run_spec, run_config, prepared.out / run_spec.name)
            write_json_atomic(prepared.out / "summary.json", [asdict(r) for r in rows])
    write_json_atomic(out / TUNE_FILE, {**tuning, "method": method, "test_directory": str(prepared.out)})
    return TuneResult(chosen, dev_scores, rows, prepared.out)


def render_dev_scores(result: TuneResult, criterion: str) -> str:
    """One line per grid point: its dev score, the chosen one marked."""
    lines = [f"dev scores ({criterion}):"]
    for d in result.dev_scores:
        mark = "  <- chosen" if d["config"] == result.chosen else ""
        lines.append(f"  {point_name(d['config'])}: {d['score']:.3f}{mark}")
    return "\n".join(lines) + "\n"
