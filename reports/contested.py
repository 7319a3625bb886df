"""Where the stream itself caps every editor's score, and how each method's scores split over it.

Two properties of a stream no method can change (:mod:`editkit.evaluation.streams`):

- **contested edits**: another edit gives the same subject a different target. ZsRE asks one subject several
  questions with different new answers (117 of the 300 test edits); a rephrase is worded as close to the
  other edit as to its own, and the scorer asks every edit to hold at once.
- **locality prompts in reach**: a locality prompt names the subject of another edit of the stream. On a
  long CounterFact stream the other subjects of an edit's relation get edits of their own (13.5 % of the
  8,000-edit stream's locality prompts), and some of those edits rewrite the very fact the prompt asks.

``editkit report DIR --stream SLICE`` adds the table built here: per method and scorer, reliability and
generalization over the contested edits and over the rest, locality over the edits with a prompt in reach
and over the rest, and, for a method that routes, the share of those locality prompts that switch its memory
on. Everything is read from the stream and the results files, the same way for every method. The slice is
the one the runs edited (``NAME[@START:COUNT]``, as for ``editkit tune``), checked against each run's
stream hash before anything is written; each run is split at its last checkpoint, with the subjects of the
edits made by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from editkit.errors import EditkitError
from editkit.evaluation.streams import Stream, contested_edits, folded, locality_in_reach, make_stream
from editkit.requests import EditRequest

from .curves import Split, routed_by_edits, split_by_edits
from .formats import Cell, Row, Table
from .merging import Series, caption, scorer_name


@dataclass(frozen=True)
class StreamFacts:
    """The stream's contested edits and locality prompts in reach, with the first ``stored`` edits made."""

    name: str
    start: int
    length: int
    stream_hash: str
    stored: int
    contested: frozenset[str]
    #: edits with a locality prompt naming another (stored) edit's subject
    reach: frozenset[str]
    named: int  # locality prompts naming one
    prompts: int  # locality prompts of the whole stream
    #: of ``reach``, edits with a prompt whose answer that subject's edit rewrote (its recorded original)
    rewritten: frozenset[str]

    def lines(self) -> list[str]:
        """The counts in words (what ``scripts/contested_edits.py`` prints)."""
        return [
            f"stream {self.name} [{self.start}:{self.start + self.length}], hash {self.stream_hash[:8]}, first {self.stored} edits: "
            f"{len(self.contested)} contested ({len(self.contested) / self.stored:.1%})",
            f"locality prompts (all {self.length} edits') naming one of their subjects: {self.named} of {self.prompts} "
            f"({self.named / max(self.prompts, 1):.1%}), in {len(self.reach)} edits; of those edits, with a prompt whose answer "
            f"that subject's edit rewrote: {len(self.rewritten)}",
        ]


def stream_facts(stream: Stream, name: str, start: int, stored: int | None = None) -> StreamFacts:
    """The facts of ``stream`` once its first ``stored`` edits (default: all) are made."""
    requests = stream.requests
    stored = len(requests) if stored is None else stored
    if not 1 <= stored <= len(requests):
        raise EditkitError(f"step {stored} is outside the stream's 1..{len(requests)} edits")
    reach = locality_in_reach(requests, stored)
    return StreamFacts(
        name=name,
        start=start,
        length=len(requests),
        stream_hash=stream.hash,
        stored=stored,
        contested=contested_edits(requests[:stored]),
        reach=frozenset(reach),
        named=sum(len(hits) for hits in reach.values()),
        prompts=sum(len(r.locality) for r in requests),
        rewritten=rewritten_locality(requests, reach, stored),
    )


def rewritten_locality(requests: Sequence[EditRequest], reach: dict, stored: int) -> frozenset[str]:
    """Edits with a locality prompt whose answer an edit (of the first ``stored``) of the subject it names
    rewrote: that edit's recorded original answer, ``meta["ground_truth"]``, is the prompt's answer. A
    correct editor must change those answers."""
    originals: dict[str, set[str]] = {}
    for r in requests[:stored]:
        if r.subject and "ground_truth" in r.meta:
            originals.setdefault(r.subject.strip(), set()).add(folded(r.meta["ground_truth"]))
    by_id = {r.id: r for r in requests}
    return frozenset(
        edit for edit, hits in reach.items() if any(folded(by_id[edit].locality[i][1]) in originals.get(subject, ()) for i, subject in hits)
    )


def load_stream(text: str, option: str = "--stream") -> tuple[Stream, str, int]:
    """The stream a ``NAME[@START:COUNT]`` slice names (file order), with its name and start."""
    from editkit.data import load_requests
    from editkit.tune import parse_slice

    chosen = parse_slice(text, option)
    return make_stream(load_requests(chosen.data), chosen.count, start=chosen.start), chosen.data, chosen.start


def check_stream(series: Sequence[Series], stream: Stream, option: str = "--stream") -> None:
    """Refuse a run of another stream (another slice, order or chat template), naming it."""
    for s in series:
        if s.run.context.stream != stream.hash:
            raise EditkitError(
                f"{option}: {s.run.source} method {s.method} ran on stream {s.run.context.stream[:8]}, not on this one "
                f"({stream.hash[:8]}); give the slice it edited (NAME@START:COUNT, as in its config.json)"
            )


CONTESTED_HEADERS = (
    "scorer", "step", "rel contested", "rel others", "gen contested", "gen others", "loc in reach", "loc others",
    "on: loc in reach", "on: loc others",
)
CONTESTED_KEYS = (
    "scorer", "step", "rel_contested", "rel_others", "gen_contested", "gen_others", "loc_in_reach", "loc_others",
    "routed_loc_in_reach", "routed_loc_others",
)


def contested_table(series: Sequence[Series], stream: Stream, name: str, start: int) -> tuple[Table | None, list[str]]:
    """The split table (None when no run kept ``results.jsonl``) and notes on what it could not split."""
    check_stream(series, stream)
    facts: dict[int, StreamFacts] = {}
    rows: list[Row] = []
    notes: list[str] = []
    for s in series:
        if s.run.results is None:
            notes.append(f"contested: {s.label} kept no results.jsonl, so its scores cannot be split by edit")
            continue
        step = max(int(r["step"]) for r in s.run.summary)
        if step not in facts:
            facts[step] = stream_facts(stream, name, start, step)
        fact = facts[step]
        routed = _cells(routed_by_edits(s.run, "locality", fact.reach, step))
        for scorer in sorted({str(r["scorer"]) for r in s.run.summary}):
            cells: list[Cell] = [scorer_name(scorer), step]
            for metric, ids in (("reliability", fact.contested), ("generalization", fact.contested), ("locality", fact.reach)):
                cells += _cells(split_by_edits(s.run, scorer, metric, ids, step))
            rows.append(Row(label=s.label, values=tuple(cells + routed), extra=(("source", str(s.run.source)),)))
    if not rows:
        return None, notes
    counted = "; ".join(
        f"after {f.stored} edits, {len(f.contested)} contested and {len(f.reach)} with a locality prompt naming an edited subject "
        f"({f.named} of {f.prompts} prompts; {len(f.rewritten)} edits with one whose answer that edit rewrote)"
        for f in facts.values()
    )
    table = Table(
        title="Contested edits and locality prompts in reach: where the stream caps every method",
        caption=f"{caption(series)}, stream {name} from record {start}: {counted}",
        label_header="method",
        headers=CONTESTED_HEADERS,
        keys=CONTESTED_KEYS,
        rows=tuple(rows),
        note=(
            "Contested: another edit of the stream gives the subject a different target, so no editor can answer "
            "both edits' rephrases right. In reach: a locality prompt names another edited subject. Each side is "
            "the mean over its edits at the run's last checkpoint (- where a side has none); on: the share of "
            "those locality prompts that switch a routing method's memory on."
        ),
    )
    return table, notes


def _cells(split: Split | None) -> list[Cell]:
    if split is None:
        return [None, None]
    return [mean if count else None for mean, count in split]
