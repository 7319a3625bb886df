"""Putting the methods of several results directories into one report, only when their numbers compare.

Numbers share a table only when they were measured on the same model, dataset, stream, schedule and scorers:
anything else would put two experiments side by side as if they were one. ``allow_mixed`` renders them
anyway, with every difference stated in the caption and every row labelled with its directory.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from editkit.errors import EditkitError
from editkit.evaluation.scorers import DESCRIPTIONS
from editkit.registry import baseline_names

from .loading import Context, MethodRun

STREAM_DIGITS = 8


def _dataset(context: Context) -> str:
    """The dataset as the user named it, without the folders of a file path: the same file named by a relative
    and an absolute path is one dataset (different contents under one name differ in the stream hash), and
    folders only make captions long."""
    return Path(context.dataset).name if "/" in context.dataset else context.dataset


#: the fields two runs must agree on to share a table, each as it is compared (the number of edits follows
#: from the stream)
MATCH_FIELDS: tuple[tuple[str, Callable[[Context], str]], ...] = (
    ("model", lambda c: c.model),
    ("dataset", _dataset),
    ("stream", lambda c: c.stream),
    ("schedule", lambda c: c.schedule),
    ("scorers", lambda c: ",".join(c.scorers)),
)


@dataclass(frozen=True)
class Series:
    """One row of a table and one line (or bar) of a figure."""

    run: MethodRun
    label: str
    source_name: str

    @property
    def method(self) -> str:
        return self.run.method

    @property
    def is_baseline(self) -> bool:
        return self.run.method in _baselines()

    @property
    def legend(self) -> str:
        """The label in a figure legend, where no table note says which row is the unedited reference."""
        return f"{self.label} (unedited)" if self.is_baseline else self.label


def _baselines() -> frozenset[str]:
    """Names of the registered editors that declare themselves the unedited baseline."""
    return frozenset(baseline_names())


def combine(groups: Sequence[Sequence[MethodRun]], allow_mixed: bool = False) -> tuple[Series, ...]:
    """The series of all directories, the unedited row first; refuses runs that do not compare.

    A method found in two directories with identical summaries (the shared ``none`` row of two comparisons
    on one stream) is shown once; with different ones it is refused, or with ``allow_mixed`` shown twice,
    each row labelled by its directory."""
    names = _short_names([runs[0].source for runs in groups if runs])
    kept: list[MethodRun] = []
    for run in (run for runs in groups for run in runs):
        if kept and not allow_mixed:
            _require_comparable(kept[0], run, names)
        twin = next((k for k in kept if k.method == run.method), None)
        if twin is not None and _summary_key(twin) == _summary_key(run):
            continue
        if twin is not None and not allow_mixed:
            raise EditkitError(
                f"method '{run.method}' is in both {twin.source} and {run.source} with different results; "
                "report them separately or pass --allow-mixed to show both rows, labelled by directory"
            )
        kept.append(run)
    mixed = len({_match_key(r.context) for r in kept}) > 1
    repeated = Counter(r.method for r in kept)
    series = [
        Series(r, f"{r.method} ({names[r.source]})" if mixed or repeated[r.method] > 1 else r.method, names[r.source])
        for r in kept
    ]
    # the unedited row first; rows of different experiments stay together, each behind its own reference
    order = list(names)
    return tuple(sorted(series, key=lambda s: (order.index(s.run.source) if mixed else 0, not s.is_baseline)))


def is_mixed(series: Sequence[Series]) -> bool:
    """Whether the series come from different experiments (only possible with ``allow_mixed``)."""
    return len({_match_key(s.run.context) for s in series}) > 1


def _require_comparable(first: MethodRun, run: MethodRun, names: dict[Path, str]) -> None:
    for name, value_of in MATCH_FIELDS:
        mine, theirs = value_of(run.context), value_of(first.context)
        if mine != theirs:
            raise EditkitError(
                f"cannot put {names[run.source]} ({run.method}) and {names[first.source]} ({first.method}) in one "
                f"table: {name} differs ({mine} vs {theirs}); pass --allow-mixed to render them with the "
                "differences in the caption"
            )


def _match_key(context: Context) -> tuple[str, ...]:
    return tuple(value_of(context) for _, value_of in MATCH_FIELDS)


def _summary_key(run: MethodRun) -> frozenset[str]:
    return frozenset(json.dumps(row, sort_keys=True) for row in run.summary)


def _short_names(paths: Sequence[Path]) -> dict[Path, str]:
    """Each directory's last path part, or its whole path where two would share a name."""
    last = {p: p.name or p.resolve().name for p in paths}
    counts = Counter(last.values())
    return {p: name if counts[name] == 1 else str(p) for p, name in last.items()}


# ------------------------------------------------------------------------------------------------ captions
#: (field, how it reads in a caption, its value in a context)
CAPTION_FIELDS: tuple[tuple[str, str, Callable[[Context], str]], ...] = (
    ("model", "model {}", lambda c: c.model),
    ("dataset", "dataset {}", _dataset),
    ("T", "T = {}", lambda c: str(c.num_edits)),
    ("stream", "stream {}", lambda c: c.stream[:STREAM_DIGITS]),
    ("schedule", "schedule {}", lambda c: c.schedule),
    ("chat template", "chat template {}", lambda c: "on" if c.chat_template else "off"),
)


def scorer_name(scorer: str) -> str:
    """``tf (teacher-forced token accuracy)``: the short name a table uses with what it means."""
    description = DESCRIPTIONS.get(scorer, "")
    return f"{scorer} ({description})" if description else scorer


def caption(series: Sequence[Series], scorer: str | None = None) -> str:
    """One line stating what the numbers were measured on; a field that differs lists each value with the
    directories it comes from."""
    parts = []
    for field, template, value_of in CAPTION_FIELDS:
        sources: dict[str, list[str]] = {}
        for s in series:
            sources.setdefault(value_of(s.run.context), []).append(s.source_name)
        if len(sources) == 1:
            parts.append(template.format(next(iter(sources))))
        else:
            listed = "; ".join(f"{value} in {', '.join(dict.fromkeys(names))}" for value, names in sources.items())
            parts.append(f"{field} differs ({listed})")
    if scorer is not None:
        parts.append(f"scorer {scorer_name(scorer)}")
    tuned = [f"{s.method} tuned on {s.run.context.tuned_on}" for s in series if s.run.context.tuned_on]
    return ", ".join(parts + tuned)
