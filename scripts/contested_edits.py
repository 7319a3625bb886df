"""How many edits of a stream are contested, and how each method's scores split over them, at any checkpoint.

``editkit report DIR --stream SLICE`` gives the same split at each run's last checkpoint as a report table
(:mod:`editkit.reports.contested`, which computes the counts for both); this script also splits at an
earlier checkpoint (``--step``).

    python scripts/contested_edits.py --data default --num-edits 300 [--start S] [--step N] [RUN_DIR ...]

An edit is contested when another edit of the stream gives its subject a different target
(:func:`editkit.evaluation.streams.contested_edits`): ZsRE asks the same question about one subject
several times with different answers, and no editor can answer both edits' rephrases right at once. A
locality prompt is in reach of another edit when it names that edit's subject
(:func:`editkit.evaluation.streams.locality_in_reach`); where the loader kept each edit's original answer
(CounterFact's ``ground_truth``), the script also counts those whose answer that edit rewrote: a correct
editor must change them.

With run directories (an ``editkit run`` or ``compare`` output that kept ``results.jsonl``) it prints, per
method and scorer, reliability and generalization over the contested edits and over the rest, and
locality over the edits with a prompt in reach and over the rest (and, from ``routing.jsonl``, the share
of those locality prompts that switch a routing method's memory on), at the last checkpoint or at ``--step N``
(then only the first N edits count as edited, as at that checkpoint). Method-agnostic: it reads the stream
and the results files only. Exit code 2, one line, for bad input or a run of another stream.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from editkit.data import load_requests
from editkit.errors import EditkitError
from editkit.evaluation.streams import Stream, make_stream
from editkit.reports.contested import stream_facts
from editkit.reports.curves import routed_by_edits, split_by_edits
from editkit.reports.loading import MethodRun, load_directory


def describe(stream: Stream, name: str, start: int, stored: int) -> tuple[frozenset[str], frozenset[str]]:
    """Print the stream's counts; return the contested edits and the edits with a locality prompt in reach."""
    facts = stream_facts(stream, name, start, stored)
    for line in facts.lines():
        print(line)
    return facts.contested, facts.reach


def split_line(run: MethodRun, scorer: str, step: int, contested: frozenset[str], reach: frozenset[str]) -> str:
    cells = []
    for metric, ids, label in (("reliability", contested, "contested"), ("generalization", contested, "contested"), ("locality", reach, "in reach")):
        split = split_by_edits(run, scorer, metric, ids, step)
        if split is None:
            cells.append(f"{metric} -")
            continue
        (inside, n_in), (outside, n_out) = split
        cells.append(f"{metric} {label} {inside:.3f} (n={n_in}) / others {outside:.3f} (n={n_out})")
    return "; ".join(cells)


def routing_line(run: MethodRun, step: int, reach: frozenset[str]) -> str | None:
    split = routed_by_edits(run, "locality", reach, step)
    if split is None:
        return None
    (inside, n_in), (outside, n_out) = split
    return f"locality prompts switching the memory on: in reach {inside:.3f} (n={n_in}) / others {outside:.3f} (n={n_out})"


@click.command()
@click.option("--data", required=True, help="dataset name or file, as for editkit run")
@click.option("--start", default=0, show_default=True, help="records to skip first")
@click.option("--num-edits", type=int, default=None, help="stream length (default: the whole file)")
@click.option("--step", type=int, default=None, help="the checkpoint to split (default: the stream's end / each run's last)")
@click.argument("runs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
def main(data: str, start: int, num_edits: int | None, step: int | None, runs: tuple[Path, ...]) -> None:
    try:
        stream = make_stream(load_requests(data), num_edits, start=start)
        if step is not None and not 1 <= step <= len(stream):
            raise EditkitError(f"--step {step} is outside the stream's 1..{len(stream)} edits")
        contested, reach = describe(stream, data, start, step or len(stream))
        for directory in runs:
            for run in load_directory(directory):
                if run.context.stream != stream.hash:
                    raise EditkitError(f"{directory}: method {run.method} ran on stream {run.context.stream[:8]}, not on this one ({stream.hash[:8]})")
                steps = {int(r["step"]) for r in run.summary}
                at = step or max(steps)
                if at not in steps:
                    raise EditkitError(f"{directory}: method {run.method} has no checkpoint at step {at} (it has {sorted(steps)})")
                if at != (step or len(stream)):
                    print(f"{directory} {run.method}: its last checkpoint is step {at}; pass --step {at} to count only the edits made by then")
                for scorer in sorted({r["scorer"] for r in run.summary}):
                    print(f"{directory} {run.method} {scorer} at step {at}: {split_line(run, scorer, at, contested, reach)}")
                routed = routing_line(run, at, reach)
                if routed is not None:
                    print(f"{directory} {run.method} at step {at}: {routed}")
    except EditkitError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
