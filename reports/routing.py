"""How well each routing method's in-scope score separates what should reach an edit from what should not.

In scope: the edit prompts and their rephrases; out of scope: the locality prompts. A low share of rephrases
at or above the threshold is lost generalization, a high share of locality prompts is lost locality; the
ROC-AUC says whether any threshold could do better, i.e. whether the score or only its operating point is
to blame. Read at the last checkpoint of each run, where the memory holds the whole stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from editkit.errors import EditkitError
from editkit.evaluation.routing import IN_SCOPE, KINDS
from editkit.evaluation.store import ROUTING

from .formats import Row, Table
from .merging import Series, caption


@dataclass(frozen=True)
class RoutingStats:
    series: Series
    step: int  # the checkpoint read; under ``immediate`` every edit's own checkpoint is read (pooled)
    pooled: bool
    score_name: str
    threshold: float  # at the last checkpoint read (the line drawn on the histogram)
    scores: dict[str, np.ndarray]  # kind -> scores of that kind's prompts
    thresholds: dict[str, np.ndarray]  # kind -> the threshold each of those prompts was routed with
    auc: float | None  # None when one of the two classes has no prompt
    roc: tuple[np.ndarray, np.ndarray] | None  # (false positive rates, true positive rates)

    def thresholds_of(self, kinds: Sequence[str]) -> np.ndarray:
        return np.concatenate([self.thresholds[k] for k in kinds])

    def routed(self, kinds: Sequence[str]) -> float | None:
        """Share of the prompts of these kinds at or above their threshold (where the edit is applied)."""
        values = np.concatenate([self.scores[k] for k in kinds])
        return float((values >= self.thresholds_of(kinds)).mean()) if values.size else None

    @property
    def tpr(self) -> float | None:
        return self.routed(IN_SCOPE)

    @property
    def fpr(self) -> float | None:
        return self.routed(("locality",))

    def count(self, kinds: Sequence[str]) -> int:
        return int(sum(self.scores[k].size for k in kinds))


def routing_stats(series: Series) -> RoutingStats | None:
    """The scores of the last checkpoint, or None for a method that wrote no routing scores.

    Under ``immediate`` each checkpoint holds only the edit just applied, so every checkpoint is read: each
    edit's prompts right after it (the threshold may move from one to the next, so each row keeps its own)."""
    rows = series.run.routing
    if not rows:
        return None
    file = series.run.directory / ROUTING if series.run.directory else ROUTING
    step = max(int(r["step"]) for r in rows)
    pooled = series.run.context.schedule == "immediate"
    by_step: dict[int, list[dict]] = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), []).append(r)
    used = rows if pooled else by_step[step]
    threshold = {at: _single(at_rows, "threshold", file, at) for at, at_rows in by_step.items()}[step]
    name = _single(used, "score_name", file, step)
    scores = {kind: np.array([float(r["score"]) for r in used if r["kind"] == kind]) for kind in KINDS}
    thresholds = {kind: np.array([float(r["threshold"]) for r in used if r["kind"] == kind]) for kind in KINDS}
    inside = np.concatenate([scores[k] for k in IN_SCOPE])
    outside = scores["locality"]
    auc = roc = None
    if inside.size and outside.size:
        labels = np.r_[np.ones(inside.size), np.zeros(outside.size)]
        values = np.r_[inside, outside]
        auc = float(roc_auc_score(labels, values))
        false_pos, true_pos, _ = roc_curve(labels, values)
        roc = (false_pos, true_pos)
    return RoutingStats(series, step, pooled, str(name), float(threshold), scores, thresholds, auc, roc)


def _single(rows: Sequence[dict], field: str, file: object, step: int) -> object:
    values = list(dict.fromkeys(r[field] for r in rows))
    if len(values) != 1:
        raise EditkitError(f"{file}: step {step} has more than one {field} ({values[0]!r}, {values[1]!r})")
    return values[0]


ROUTING_HEADERS = ("score", "threshold", "ROC-AUC", "TPR", "FPR", "edits routed", "rephrases routed", "in scope", "out of scope")
ROUTING_KEYS = ("score", "threshold", "roc_auc", "tpr", "fpr", "edit_routed", "rephrase_routed", "n_in_scope", "n_out_of_scope")


def routing_table(stats: Sequence[RoutingStats]) -> Table:
    rows = tuple(
        Row(
            label=st.series.label,
            values=(
                st.score_name,
                st.threshold if np.unique(st.thresholds_of(KINDS)).size == 1 else f"varies, last {st.threshold:.3g}",
                st.auc,
                st.tpr,
                st.fpr,
                st.routed(("edit",)),
                st.routed(("rephrase",)),
                st.count(IN_SCOPE),
                st.count(("locality",)),
            ),
            extra=(("step", str(st.step)), ("source", str(st.series.run.source))),
        )
        for st in stats
    )
    when = sorted({"right after each edit" if st.pooled else f"after {st.step} edits" for st in stats})
    return Table(
        title="Routing: how well each method's in-scope score separates edit prompts and rephrases from locality prompts",
        caption=caption([st.series for st in stats]) + f", scores {' and '.join(when)}",
        label_header="method",
        headers=ROUTING_HEADERS,
        keys=ROUTING_KEYS,
        rows=rows,
        note=(
            "ROC-AUC (scikit-learn): in scope against out of scope over all thresholds. TPR, FPR: share of "
            "in-scope, locality prompts whose score is at or above the method's threshold, i.e. that its edits "
            "are applied to; edits / rephrases routed: the same share for each kind."
        ),
    )
