"""Hyper-parameters of MEMOIR, with the official defaults (MEMOIR paper / code, LLaMA-3-8B on ZsRE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from editkit.checks import is_number, parse_layer
from editkit.easyedit import KeyTable, module_from_inner_params, only
from editkit.editor import EditorConfig
from editkit.errors import ConfigError

from .subjects import SWAP_SUBJECTS

AGGREGATIONS = ("mean_decentered", "mean", "last")
DECAYS = ("all", "masked")
PROTECTIONS = ("none", "nullspace")
PROTECT_KEYS = ("all", "target")
ROUTERS = ("overlap", "rerank")

#: the official edited layer, 27 of LLaMA-3-8B's 32, scaled to the model's depth when ``layer`` is None
OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS = 27, 32
#: the official mask size, 4096 of LLaMA-3-8B's 14336 MLP channels, kept as a ratio for other widths
OFFICIAL_K_RATIO = 4096 / 14336


@dataclass
class MemoirConfig(EditorConfig):
    """One residual memory on one FFN down-projection, switched per row by TopHash masks.

    ``layer``: ``None`` = the official depth (27 of 32) scaled to this model; an integer = that block's
    down-projection; a dotted module path (``model.layers.25.mlp.down_proj``) = exactly that module.
    ``k``: mask size; an ``int`` (or an integral float ≥ 1) is a count, a float < 1 a fraction of the width.
    ``aggregation``: how a prompt's down-projection inputs become one vector before top-k.
    ``tau``: minimum overlap ``|m_q ∧ m_j| / k`` with a stored mask for the memory to switch on.
    ``decay``: ``all`` decays the whole memory at every step (official: older edits decay too);
    ``masked`` decays only the columns of the current edit's mask.
    ``early_stop_loss``/``early_stop_delta``: stop once the loss is ≤ the first *and* moved by ≤ the second.
    ``extra_iter`` (beyond the paper; 0 = official): an edit whose loss is still above ``early_stop_loss``
    after ``n_iter`` steps takes up to this many more, and stops as soon as it gets there (an unconverged
    edit is an unreliable one: on the dev slices their tf reliability was .67-.73 against .995-1.000).
    ``num_prefixes``: context-prefixed copies of the request per edit (official 10).
    ``background_size``: unrelated prompts averaged into the background mean of ``mean_decentered``.
    ``seed``: draws the TopHash permutation.
    ``fast_edit``: run only the layers above the memory in each step (same result, several times faster);
    ``False`` = the reference loop: full forward of every row, the irrelevant text included.

    Beyond the paper (off by default; ``memoir+`` turns them on, docs/tuning/memoir-plus.md):

    ``protect``: ``none`` (official) or ``nullspace``: every step's update of the new edit's columns, weight
    decay included, is projected off the directions earlier edits' masked activations span inside those
    columns, so what an earlier edit's tokens read from the memory does not move. ``protect_tol``: a
    direction counts as used when its eigenvalue in the column set's key covariance exceeds this share of
    the largest one (AlphaEdit's relative cut-off); the rest is free for the new edit. ``protect_keys``:
    which of an edit's tokens are protected from later edits: ``all`` (every prompt and target token) or
    ``target`` (only the positions whose logits predict a target token, the ones its loss and its scoring
    read), which protects far fewer directions per edit and so leaves later edits more room.
    ``router``: ``overlap`` (official: the best-overlapping mask, on when ≥ τ) or ``rerank``: the
    ``rerank_candidates`` best-overlapping masks that reach τ are re-ranked by the cosine between the query's
    pooled feature (``rerank_feature``, an aggregation) and the one stored with each edit; the best cosine
    picks the edit and the memory is on when it is ≥ ``rerank_tau``. ``subject_swaps`` (rerank only; 0 =
    off): each edit also stores the mean feature of its prompt with the subject swapped for that many
    stand-in names (the relation without the subject), and the memory is on only when the query's cosine
    with the chosen edit's feature beats its cosine with that bare relation by ``subject_margin``
    (``methods/memoir/subjects.py``); it needs each request's subject inside its prompt.
    ``subject_calibrate`` (needs ``subject_swaps`` ≥ 2): the margin is raised per edit by its best
    stand-in's own score against the other stand-ins (how close a prompt about another subject gets).
    ``subject_margin_growth`` (0 = off): with more edits stored, more same-relation edits compete for a
    prompt about another subject, and the best of them passes a fixed margin more often (CounterFact dev:
    5 % of locality prompts at 300 stored edits, 20 % at 2,000), so the margin rises by this much for every
    tenfold of stored edits beyond ``subject_margin_from``; up to that many it is ``subject_margin``.
    ``rival_lead`` (needs ``subject_swaps``; 0 = off): the chosen edit's cosine must also lead by this much
    every other candidate about another subject (``subjects.rival_leads``; candidates whose subject parts
    ``f − r`` have a cosine of at least ``rival_same_subject`` count as one subject, so siblings are not
    rivals). A rephrase leads other subjects' edits by far; a prompt about an unedited subject sits among
    several same-relation edits (CounterFact dev at 2,000 edits: 47 % of the locality prompts switched on
    had another candidate passing the subject check, 5 % of the rephrases on their own edit).
    """

    layer: int | str | None = None  # official layer 27/32, scaled (a late layer stores facts, keeps routing sharp)
    k: int | float = OFFICIAL_K_RATIO  # official 4096/14336 ≈ 0.286 of the channels
    aggregation: str = "mean_decentered"  # official: mean over prompt tokens minus the background mean
    tau: float = 0.5  # official 0.4 fires on 43-94 % of unrelated prompts of the default model (docs/tuning/memoir.md)
    lr: float = 2.0  # official 1.0 leaves the default model's edits unconverged after 30 steps (docs/tuning/memoir.md)
    weight_decay: float = 1e-5  # official SGD weight decay
    decay: str = "all"  # official behaviour: torch SGD decays the whole memory, earlier edits included
    clip: float = 1.0  # official gradient-norm clip
    n_iter: int = 30  # official number of SGD steps per edit
    early_stop_loss: float = 0.02  # official: stop once the loss is this low...
    early_stop_delta: float = 1e-4  # ...and no longer moving
    extra_iter: int = 0  # official: none; more steps only for an edit still above early_stop_loss
    num_prefixes: int = 10  # official: 10 context templates (5 seeds x lengths 5 and 10)
    background_size: int = 100  # official: ~100 irrelevant prompts for the background mean
    seed: int = 0  # the TopHash permutation's seed
    fast_edit: bool = True  # cached lower layers + target-only head; False = the reference full forward
    protect: str = "none"  # official: a new edit may rewrite what earlier edits read; nullspace: it may not
    protect_tol: float = 1e-2  # eigenvalue share above which a key direction of earlier edits is protected
    protect_keys: str = "all"  # which of an edit's tokens later edits must not change: all, or target positions
    router: str = "overlap"  # official: best mask overlap >= tau; rerank: + cosine of stored pooled features
    rerank_candidates: int = 8  # masks (those reaching tau, best overlap first) the cosine check chooses among
    rerank_feature: str = "mean_decentered"  # the pooled activation stored with each edit for the cosine
    rerank_tau: float = 0.5  # the memory is on when the chosen edit's cosine is at least this
    subject_swaps: int = 0  # rerank: stand-in subjects each edit's subject check is measured with (0: no check)
    subject_margin: float = 0.02  # ...and the query must be this much closer to the edit than to its bare relation
    subject_calibrate: bool = False  # ...plus, per edit, what its best stand-in scores (a neighbour's reach)
    subject_margin_growth: float = 0.0  # ...plus this much per tenfold of stored edits beyond subject_margin_from
    subject_margin_from: int = 300  # ...the number of stored edits the margin was chosen at
    rival_lead: float = 0.0  # ...and the chosen edit's cosine must lead other subjects' candidates by this (0: off)
    rival_same_subject: float = 0.5  # ...candidates whose subject parts have at least this cosine are one subject

    easyedit_alg_names: ClassVar[tuple[str, ...]] = ("MEMOIR",)
    #: the keys of the MEMOIR authors' EasyEdit hparams (hparams/MEMOIR/llama3-8b.yaml)
    easyedit_keys: ClassVar[KeyTable] = {
        "inner_params": module_from_inner_params("layer"),
        "edit_lr": "lr",
        "n_iter": "n_iter",
        "top_k": "k",
        "irr_threshold": "tau",
        "prompt_feature_agg": "aggregation",
        "objective_optimization": only("only_label"),  # cross-entropy on the target tokens only
        # editkit computes the background mean from the stream's irrelevant texts and caches it itself
        "dir_background_features": None,
        "RUN_SAVE_BACKGROUND_FEATURES": None,
        "dir_to_save_background_features": None,
    }

    def __post_init__(self) -> None:
        self.layer = parse_layer(self.layer, "MEMOIR")
        if isinstance(self.k, bool) or not is_number(self.k) or not self.k > 0:
            raise ConfigError(f"MEMOIR k must be a count >= 1 or a fraction in (0, 1), not {self.k!r}")
        if isinstance(self.k, float) and self.k >= 1 and not self.k.is_integer():
            raise ConfigError(f"MEMOIR k {self.k} is neither a fraction < 1 nor a whole count")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"MEMOIR aggregation must be one of {', '.join(AGGREGATIONS)}, not '{self.aggregation}'")
        if self.decay not in DECAYS:
            raise ConfigError(f"MEMOIR decay must be one of {', '.join(DECAYS)}, not '{self.decay}'")
        if self.protect not in PROTECTIONS:
            raise ConfigError(f"MEMOIR protect must be one of {', '.join(PROTECTIONS)}, not '{self.protect}'")
        if self.protect_keys not in PROTECT_KEYS:
            raise ConfigError(f"MEMOIR protect_keys must be one of {', '.join(PROTECT_KEYS)}, not '{self.protect_keys}'")
        if self.router not in ROUTERS:
            raise ConfigError(f"MEMOIR router must be one of {', '.join(ROUTERS)}, not '{self.router}'")
        if self.rerank_feature not in AGGREGATIONS:
            raise ConfigError(f"MEMOIR rerank_feature must be one of {', '.join(AGGREGATIONS)}, not '{self.rerank_feature}'")
        if not is_number(self.rerank_tau) or not -1 <= self.rerank_tau <= 1:
            raise ConfigError(f"MEMOIR rerank_tau must be a cosine in [-1, 1], not {self.rerank_tau!r}")
        if not is_number(self.subject_margin) or not 0 <= self.subject_margin <= 1:
            raise ConfigError(f"MEMOIR subject_margin must be a number in [0, 1], not {self.subject_margin!r}")
        if not is_number(self.subject_margin_growth) or not 0 <= self.subject_margin_growth <= 1:
            raise ConfigError(f"MEMOIR subject_margin_growth must be a number in [0, 1], not {self.subject_margin_growth!r}")
        if isinstance(self.subject_margin_from, bool) or not isinstance(self.subject_margin_from, int) or self.subject_margin_from < 1:
            raise ConfigError(f"MEMOIR subject_margin_from must be a whole number of edits >= 1, not {self.subject_margin_from!r}")
        if not is_number(self.rival_lead) or not 0 <= self.rival_lead <= 2:
            raise ConfigError(f"MEMOIR rival_lead must be a cosine difference in [0, 2], not {self.rival_lead!r}")
        if not is_number(self.rival_same_subject) or not -1 <= self.rival_same_subject <= 1:
            raise ConfigError(f"MEMOIR rival_same_subject must be a cosine in [-1, 1], not {self.rival_same_subject!r}")
        if not is_number(self.protect_tol) or not 0 < self.protect_tol < 1:
            raise ConfigError(f"MEMOIR protect_tol must be a number in (0, 1), not {self.protect_tol!r}")
        if not is_number(self.tau) or not 0 <= self.tau <= 1:
            raise ConfigError(f"MEMOIR tau must be a number in [0, 1], not {self.tau!r}")
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if not is_number(value) or not value > 0:
                raise ConfigError(f"MEMOIR {name} must be a number > 0, not {value!r}")
        for name in ("weight_decay", "early_stop_loss", "early_stop_delta"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise ConfigError(f"MEMOIR {name} must be a number >= 0, not {value!r}")
        for name, low in (("n_iter", 1), ("extra_iter", 0), ("num_prefixes", 0), ("background_size", 1), ("rerank_candidates", 1), ("subject_swaps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"MEMOIR {name} must be an integer >= {low}, not {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"MEMOIR seed must be an integer, not {self.seed!r}")
        if not isinstance(self.fast_edit, bool):
            raise ConfigError(f"MEMOIR fast_edit must be true or false, not {self.fast_edit!r}")
        if self.subject_swaps and self.router != "rerank":
            raise ConfigError(f"MEMOIR subject_swaps > 0 is a check of the rerank router; set router=rerank (it is '{self.router}')")
        if not isinstance(self.subject_calibrate, bool):
            raise ConfigError(f"MEMOIR subject_calibrate must be true or false, not {self.subject_calibrate!r}")
        if self.subject_calibrate and self.subject_swaps < 2:
            raise ConfigError(f"MEMOIR subject_calibrate needs subject_swaps >= 2 (it is {self.subject_swaps}): a stand-in is scored against the others")
        if self.rival_lead and not self.subject_swaps:
            raise ConfigError("MEMOIR rival_lead needs the subject check (subject_swaps > 0): a candidate's subject is its feature less its bare relation")
        if self.subject_swaps > len(SWAP_SUBJECTS) - 1:
            raise ConfigError(f"MEMOIR subject_swaps is at most {len(SWAP_SUBJECTS) - 1} (the stand-in names other than the subject)")

    def mask_size(self, width: int) -> int:
        """``k`` as a count of channels for a down-projection input of ``width`` channels."""
        if isinstance(self.k, float) and self.k < 1:
            count = round(self.k * width)
        else:
            count = int(self.k)
        if not 1 <= count <= width:
            raise ConfigError(f"MEMOIR k = {self.k} gives {count} channels, but the layer has {width}")
        return count

