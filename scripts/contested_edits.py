"""How many edits of a stream are contested, and how each method's scores split over them.

    python scripts/contested_edits.py --data default --num-edits 300 [--start S] [RUN_DIR ...]

An edit is contested when another edit of the stream gives its subject a different target
(:func:`editkit.evaluation.streams.contested_edits`): ZsRE asks the same question about one subject
several times with different answers, and no editor can answer both edits' rephrases right at once. With
run directories (an ``editkit run`` or ``compare`` output that kept ``results.jsonl``) it prints, per
method and scorer, reliability and generalization at the last checkpoint over the contested edits and
over the rest, so a generalization gap can be read as the stream's or the method's. Method-agnostic: it
reads the stream and the results files only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from editkit.data import load_requests
from editkit.errors import EditkitError
from editkit.evaluation.streams import contested_edits, locality_in_reach, make_stream
from editkit.reports.curves import split_by_edits
from editkit.reports.loading import load_directory

METRICS = ("reliability", "generalization")


def _folded(text: str) -> str:
    return " ".join(str(text).casefold().split())


def rewritten_locality(requests, reach: dict) -> frozenset[str]:
    """Edits with a locality prompt whose answer another edit of its named subject rewrote: that edit's
    recorded original answer (``meta["ground_truth"]``, CounterFact's loader keeps it) is the prompt's."""
    originals: dict[str, set[str]] = {}
    for r in requests:
        if r.subject and "ground_truth" in r.meta:
            originals.setdefault(r.subject.strip(), set()).add(_folded(r.meta["ground_truth"]))
    by_id = {r.id: r for r in requests}
    return frozenset(
        edit for edit, hits in reach.items() if any(_folded(by_id[edit].locality[i][1]) in originals.get(subject, ()) for i, subject in hits)
    )


@click.command()
@click.option("--data", required=True, help="dataset name or file, as for editkit run")
@click.option("--start", default=0, show_default=True, help="records to skip first")
@click.option("--num-edits", type=int, default=None, help="stream length (default: the whole file)")
@click.argument("runs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
def main(data: str, start: int, num_edits: int | None, runs: tuple[Path, ...]) -> None:
    try:
        stream = make_stream(load_requests(data), num_edits, start=start)
        ids = contested_edits(stream.requests)
        subjects = sum(1 for r in stream.requests if r.subject and r.subject.strip())
        print(f"stream {data} [{start}:{start + len(stream)}], hash {stream.hash[:8]}: {len(ids)} of {len(stream)} edits contested "
              f"({len(ids) / len(stream):.1%}); {subjects} carry a subject")
        reach = locality_in_reach(stream.requests)
        prompts = sum(len(r.locality) for r in stream.requests)
        named = sum(len(hits) for hits in reach.values())
        rewritten = rewritten_locality(stream.requests, reach)
        print(f"locality prompts naming another edit's subject: {named} of {prompts} ({named / max(prompts, 1):.1%}), "
              f"in {len(reach)} edits; edits with one whose answer that subject's edit rewrote: {len(rewritten)}")
        for directory in runs:
            for run in load_directory(directory):
                if run.context.stream != stream.hash:
                    raise EditkitError(f"{directory}: method {run.method} ran on stream {run.context.stream[:8]}, not on this one ({stream.hash[:8]})")
                last = max(int(r["step"]) for r in run.summary)
                if last < len(stream):
                    print(f"{directory} {run.method}: its last checkpoint is step {last} of {len(stream)}; the splits below count "
                          f"as contested what edits after it make so")
                for scorer in sorted({r["scorer"] for r in run.summary}):
                    cells = []
                    for metric in METRICS:
                        split = split_by_edits(run, scorer, metric, ids)
                        if split is None:
                            cells.append(f"{metric} -")
                            continue
                        (inside, n_in), (outside, n_out) = split
                        cells.append(f"{metric} contested {inside:.3f} (n={n_in}) / others {outside:.3f} (n={n_out})")
                    split = split_by_edits(run, scorer, "locality", frozenset(reach))
                    if split is not None:
                        (inside, n_in), (outside, n_out) = split
                        cells.append(f"locality naming another edit's subject {inside:.3f} (n={n_in}) / others {outside:.3f} (n={n_out})")
                    print(f"{directory} {run.method} {scorer}: " + "; ".join(cells))
    except EditkitError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
