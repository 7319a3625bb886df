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
    step: int
    score_name: str
    threshold: float
    scores: dict[str, np.ndarray]  # kind -> scores of that kind's prompts
    auc: float | None  # None when one of the two classes has no prompt
    roc: tuple[np.ndarray, np.ndarray] | None  # (false positive rates, true positive rates)

    def routed(self, kinds: Sequence[str]) -> float | None:
        """Share of the prompts of these kinds at or above the threshold (where the edit is applied)."""
        values = np.concatenate([self.scores[k] for k in kinds])
        return float((values >= self.threshold).mean()) if values.size else None

    @property
    def tpr(self) -> float | None:
        return self.routed(IN_SCOPE)

    @property
    def fpr(self) -> float | None:
        return self.routed(("locality",))

    def count(self, kinds: Sequence[str]) -> int:
        return int(sum(self.scores[k].size for k in kinds))


def routing_stats(series: Series) -> RoutingStats | None:
    """The scores of the last checkpoint, or None for a method that wrote no routing scores."""
    rows = series.run.routing
    if not rows:
        return None
    step = max(int(r["step"]) for r in rows)
    last = [r for r in rows if int(r["step"]) == step]
    file = series.run.directory / ROUTING if series.run.directory else ROUTING
    threshold, name = _single(last, "threshold", file, step), _single(last, "score_name", file, step)
    scores = {kind: np.array([float(r["score"]) for r in last if r["kind"] == kind]) for kind in KINDS}
    inside = np.concatenate([scores[k] for k in IN_SCOPE])
    outside = scores["locality"]
    auc = roc = None
    if inside.size and outside.size:
        labels = np.r_[np.ones(inside.size), np.zeros(outside.size)]
        values = np.r_[inside, outside]
        auc = float(roc_auc_score(labels, values))
        false_pos, true_pos, _ = roc_curve(labels, values)
        roc = (false_pos, true_pos)
    return RoutingStats(series, step, str(name), float(threshold), scores, auc, roc)


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
                st.threshold,
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
    steps = sorted({st.step for st in stats})
    return Table(
        title="Routing: how well each method's in-scope score separates edit prompts and rephrases from locality prompts",
        caption=caption([st.series for st in stats]) + f", scores after {', '.join(map(str, steps))} edits",
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
