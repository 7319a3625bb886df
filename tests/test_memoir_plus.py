"""MEMOIR beyond the paper (issue 20): interference protection, the re-ranking router, the ``memoir+`` variant.

On tiny random Llama models. The conformance suite runs ``memoir`` with the ``plus`` variants through the
generic contract (state round trip, batching, KV cache, reset); these tests pin down what each option
promises on its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from editkit import EditRequest, encode
from editkit.errors import ConfigError, EditkitError
from editkit.methods.memoir import MemoirConfig, MemoirEditor
from editkit.methods.memoir.protect import KeyCovariance
from editkit.methods.memoir.rerank import NO_CANDIDATE, FeatureTable
from editkit.methods.memoir.subjects import SWAP_SUBJECTS, SubjectTable, swapped_prompts
from editkit.registry import get_editor_spec
from editkit.testing import tiny_model_and_tokenizer

SUBJECTS = ("Xo", "Zed", "Ken", "Mira", "Tove", "Pax")
RELATIONS = ("The capital of {} is", "{} plays the", "{} was born in")


def _requests(n: int) -> list[EditRequest]:
    return [
        EditRequest(
            id=str(i),
            prompt=RELATIONS[i % len(RELATIONS)].format(SUBJECTS[i // len(RELATIONS) % len(SUBJECTS)]),
            target=("Lum", "oboe", "Rio")[i % 3],
            rephrases=(),
            locality=(),
            subject=SUBJECTS[i // len(RELATIONS) % len(SUBJECTS)],
        )
        for i in range(n)
    ]


def _editor(name: str = "memoir", **overrides) -> MemoirEditor:
    model, tokenizer = tiny_model_and_tokenizer()
    spec = get_editor_spec(name)
    return spec.build(model, tokenizer, spec.make_config(**overrides))


def _keys(editor: MemoirEditor, request: EditRequest) -> torch.Tensor:
    """What an edit's own tokens read the memory with: its masked down-projection inputs [n, D]."""
    mask = editor.prompt_masks([request.prompt])[0]
    acts = editor.split.module_inputs(editor.training_batch(request))[0].float()
    return acts * mask.float()


def test_memoir_stays_faithful_and_memoir_plus_turns_the_options_on():
    faithful = get_editor_spec("memoir").make_config()
    assert (faithful.protect, faithful.router, faithful.decay) == ("none", "overlap", "all")
    plus = get_editor_spec("memoir+").make_config()
    assert (plus.protect, plus.router, plus.decay) == ("nullspace", "rerank", "masked")
    assert (plus.protect_tol, plus.lr) == (0.1, 4.0)  # the dev-slice choice (docs/tuning/memoir-plus.md)
    assert (plus.extra_iter, plus.early_stop_delta) == (10, 1.0)  # unconverged edits: the same docs, "extra_iter"
    assert (faithful.extra_iter, faithful.early_stop_delta) == (0, 1e-4)
    assert (plus.subject_margin_growth, plus.subject_margin_from, faithful.subject_margin_growth) == (0.25, 300, 0.0)
    assert {"plus", "plus-reference-loop"} <= set(MemoirEditor.conformance_variants)
    editor = _editor("memoir+")
    assert editor.name == "memoir+" and editor.keys is not None and editor.features is not None


def test_config_refuses_bad_options():
    for bad in ({"protect": "all"}, {"router": "cosine"}, {"rerank_feature": "max"}, {"rerank_tau": 1.5},
                {"protect_tol": 0}, {"protect_tol": 1}, {"rerank_candidates": 0}, {"protect_keys": "prompt"},
                {"rival_lead": -0.1}, {"rival_same_subject": 2}):
        with pytest.raises(ConfigError):
            MemoirConfig(**bad)


@pytest.mark.parametrize("tol", [1e-6, 1e-2])
def test_protected_edits_leave_what_earlier_edits_read_alone(tol):
    """A later edit changes ``W_m·x`` at an earlier edit's keys only in the directions ``protect_tol`` lets
    go; without protection the same later edits move it much more (the interference the option removes)."""
    drifts = {}
    for protect in ("none", "nullspace"):
        editor = _editor(protect=protect, decay="masked", weight_decay=0.01, protect_tol=tol, tau=0.7, n_iter=5)
        first, *later = _requests(6)
        editor.edit(first)
        keys = _keys(editor, first)
        before = keys @ editor.memory.weight.detach().T
        for request in later:
            stats = editor.edit(request)
        after = keys @ editor.memory.weight.detach().T
        drifts[protect] = float((after - before).norm() / before.norm())
        if protect == "nullspace":
            assert stats["protected_dims"] > 0 and 0.0 <= stats["free_key_share"] <= 1.0
    assert drifts["nullspace"] < 0.1 * drifts["none"], drifts
    if tol == 1e-6:
        assert drifts["nullspace"] < 1e-4, drifts


def test_protecting_target_positions_keeps_their_reads_with_fewer_protected_directions():
    """``protect_keys = target`` protects only the positions an edit's loss and scoring read: those reads
    stay put under later edits, and fewer directions are taken from later edits than with ``all``."""
    from editkit.tier import target_positions

    dims = {}
    for keys_option in ("all", "target"):
        editor = _editor(protect="nullspace", protect_keys=keys_option, decay="masked", weight_decay=0.01,
                         protect_tol=1e-6, tau=0.7, n_iter=5)
        first, *later = _requests(4)
        editor.edit(first)
        batch = editor.training_batch(first)
        keys = _keys(editor, first)[target_positions(batch)[1]]
        before = keys @ editor.memory.weight.detach().T
        stats = [editor.edit(request) for request in later]
        after = keys @ editor.memory.weight.detach().T
        assert float((after - before).norm() / before.norm()) < 1e-4
        dims[keys_option] = sum(row["protected_dims"] for row in stats)
    assert 0 < dims["target"] < dims["all"], dims


def test_the_protected_basis_spans_the_earlier_keys_of_a_column_set():
    cov = KeyCovariance(8, tol=1e-9)
    assert cov.protected(torch.arange(4)) is None  # nothing stored yet: nothing to protect
    keys = torch.zeros(3, 8)
    keys[:, :3] = torch.randn(3, 3)
    cov.add(keys)
    basis = cov.protected(torch.tensor([0, 1, 2, 5]))
    assert basis.shape == (4, 3)
    inside = keys[:, [0, 1, 2, 5]]
    assert torch.allclose(inside - (inside @ basis) @ basis.T, torch.zeros_like(inside), atol=1e-5)
    assert cov.protected(torch.tensor([4, 6])) is None  # a column set no earlier key touches
    assert KeyCovariance.free_share(inside, basis) < 1e-6


@pytest.mark.parametrize(
    "options", [{"protect": "nullspace", "decay": "masked"}, {"protect": "nullspace", "protect_keys": "target"}, {"router": "rerank"}]
)
def test_fast_edit_matches_the_full_forward_edit_with_the_options(options):
    fast, full = _editor(**options), _editor(**options, fast_edit=False)
    for request in _requests(4):
        a, b = fast.edit(request), full.edit(request)
        assert a["iterations"] == b["iterations"] and abs(a["loss"] - b["loss"]) <= 1e-4
    assert (fast.memory.weight - full.memory.weight).abs().max().item() <= 1e-4


def test_rerank_picks_the_candidate_with_the_closest_feature():
    table = FeatureTable(4)
    for row in ([1.0, 0, 0, 0], [0, 1.0, 0, 0], [0.6, 0.8, 0, 0]):
        table.add(torch.tensor(row))
    overlaps = np.array([[9, 8, 7], [9, 8, 7], [3, 2, 1]], dtype=np.uint16)
    queries = torch.tensor([[0.0, 1, 0, 0], [1.0, 0.1, 0, 0], [0.0, 1, 0, 0]])
    rows, scores, found = table.rerank(overlaps, queries, min_overlap=5, candidates=2, k=10)
    # query 0: candidates rows 0, 1 (row 2 is past the shortlist), row 1 matches; query 2: nothing reaches 5
    assert rows.tolist() == [1, 0, 0]
    assert scores[0] == pytest.approx(1.0) and scores[1] > 0.99 and scores[2] == pytest.approx(0.3 - NO_CANDIDATE)
    assert found.tolist() == [True, True, False]


@pytest.mark.parametrize("subject_swaps", [0, 4])
def test_rerank_scores_are_what_routing_decides(subject_swaps):
    editor, base = _editor(router="rerank", tau=0.7, n_iter=3, subject_swaps=subject_swaps), _editor()
    requests = _requests(9)
    for request in requests:
        editor.edit(request)
    prompts = [r.prompt for r in requests] + ["Grass is", "The capital of Ulm is", "Q", "Tell me: Zed plays the"]
    batch = encode(editor.tokenizer, prompts, ["xyz"] * len(prompts))
    scores = editor.routing_scores(batch)
    if subject_swaps:  # the least of the two margins, against 0; an edit prompt's cosine margin is 1 - rerank_tau
        assert (scores.threshold, scores.name) == (0.0, "feature cosine of the best masks and subject check, least margin")
        assert all(0 < s <= 1 - editor.config.rerank_tau + 1e-5 for s in scores.scores[: len(requests)])
    else:
        assert (scores.threshold, scores.name) == (editor.config.rerank_tau, "feature cosine of the best masks")
        assert all(s == pytest.approx(1.0, abs=1e-5) for s in scores.scores[: len(requests)])  # each edit finds itself
    routed = [not torch.equal(a, b) for a, b in zip(editor.logits(batch), base.logits(batch))]
    assert routed == [s >= scores.threshold for s in scores.scores]
    assert not all(routed)


def test_plus_state_round_trip_and_a_faithful_state_is_refused(tmp_path):
    editor = _editor("memoir+", n_iter=3)
    for request in _requests(3):
        editor.edit(request)
    editor.save_state(tmp_path / "plus")
    again = _editor("memoir+")
    again.load_state(tmp_path / "plus")
    assert torch.equal(again.keys.matrix, editor.keys.matrix) and torch.equal(again.features.matrix, editor.features.matrix)
    batch = encode(editor.tokenizer, [r.prompt for r in _requests(3)], ["ab"] * 3)
    assert torch.equal(again.logits(batch), editor.logits(batch))
    faithful = _editor(n_iter=3)
    faithful.edit(_requests(1)[0])
    faithful.save_state(tmp_path / "faithful")
    with pytest.raises(EditkitError, match=r"not 'memoir\+'"):
        _editor("memoir+").load_state(tmp_path / "faithful")
    with pytest.raises(EditkitError, match="key_covariance"):  # same name, another option set
        _editor(protect="nullspace").load_state(tmp_path / "faithful")


def test_the_subject_check_asks_for_a_query_closer_to_the_edit_than_to_its_bare_relation():
    table = SubjectTable(3)
    table.add(torch.tensor([1.0, 2.0, 0]), torch.tensor([[1.0, 0, 0], [2.0, 0, 0]]))  # swaps: the relation alone
    table.add(torch.tensor([1.0, 0, 0]), torch.tensor([[1.0, 0, 0]]))  # a subject that adds nothing: gap 0
    queries = torch.tensor([[1.0, 2.0, 0], [1.0, 0, 3.0], [5.0, 0, 0], [0.0, 0, 0]])
    rows = np.array([0, 0, 1, -1])
    cosines = F.cosine_similarity(queries, torch.tensor([[1.0, 2.0, 0], [1.0, 2.0, 0], [1.0, 0, 0], [1.0, 0, 0]])).double().numpy()
    margins = table.margins(rows, queries, cosines, margin=0.02)
    # the edit itself: 1 - cos(f, r) - .02; another subject: closer to the bare relation; the second edit's
    # own prompt needs no margin (half its gap, 0) and passes at exactly 0; nothing chosen: -1
    assert margins == pytest.approx([1 - 5**-0.5 - 0.02, 50**-0.5 - 10**-0.5 - 0.02, 0.0, -1.0], abs=1e-6)
    assert table.gaps.tolist() == pytest.approx([1 - 5**-0.5, 0.0], abs=1e-6)


def test_swapped_prompts_replace_the_subject_and_never_use_it_as_a_stand_in():
    request = EditRequest(id="0", prompt="Tokyo is in Tokyo's", target="x", subject="Tokyo")
    prompts = swapped_prompts(request, len(SWAP_SUBJECTS) - 1)
    assert len(prompts) == len(SWAP_SUBJECTS) - 1 and not any("Tokyo" in p for p in prompts)
    assert prompts[0] == "John Smith is in John Smith's"


def test_stand_ins_in_one_padded_pass_give_the_features_of_one_pass_each():
    """The subject check computes its stand-ins together; padding must not reach the real positions."""
    editor = _editor("memoir+")
    prompts = swapped_prompts(_requests(2)[1], 6) + [""]
    alone, together = editor.prompt_features(prompts), editor.prompt_features(prompts, together=True)
    assert alone.keys() == together.keys()
    for mode in alone:
        assert torch.isnan(together[mode][-1]).all() and torch.isnan(alone[mode][-1]).all()
        torch.testing.assert_close(together[mode][:-1], alone[mode][:-1], atol=1e-4, rtol=1e-4)


def test_the_subject_check_needs_the_reranker_and_subjects_in_prompts():
    with pytest.raises(ConfigError, match="router=rerank"):
        MemoirConfig(subject_swaps=4)
    with pytest.raises(ConfigError, match="at most"):
        MemoirConfig(router="rerank", subject_swaps=len(SWAP_SUBJECTS))
    editor = _editor(router="rerank", subject_swaps=4)
    bad = [*_requests(2), EditRequest(id="r7", prompt="Grass is", target="red", subject="Moss")]
    with pytest.raises(EditkitError, match="edit request r7: subject 'Moss' does not occur"):
        editor.check_requests(bad)
    editor.check_requests(_requests(3))  # subjects present: accepted


def test_a_calibrated_edit_asks_a_query_to_beat_its_best_stand_in():
    own = torch.tensor([1.0, 1.0, 0])
    # two stand-ins: the first scores cos(s, f) - cos(s, the other) = 1/sqrt(2) - 0 > 0, the second is the relation
    swapped = torch.tensor([[1.0, 0.1, 0], [0.0, 0, 1.0]])
    plain, calibrated = SubjectTable(3), SubjectTable(3, calibrated=True)
    for table in (plain, calibrated):
        table.add(own, swapped)
    floor = float(calibrated.floors[0])
    unit_s = F.normalize(swapped[0], dim=0)
    assert floor == pytest.approx(float(unit_s @ F.normalize(own, dim=0) - unit_s @ swapped[1]), abs=1e-6) and floor > 0
    query = torch.tensor([[1.0, 0.8, 0.3]])
    cosine = F.cosine_similarity(query, own[None]).double().numpy()
    gap = float(calibrated.gaps[0])
    margin = 0.01
    assert plain.margins(np.array([0]), query, cosine, margin)[0] - calibrated.margins(np.array([0]), query, cosine, margin)[0] == pytest.approx(
        min(margin + floor, gap / 2) - min(margin, gap / 2), abs=1e-6
    )
    # a stand-in scoring below 0 leaves the margin as it is; the edit prompt still passes (capped at half the gap)
    low = SubjectTable(3, calibrated=True)
    low.add(own, torch.tensor([[0.0, 0, 1.0], [0.0, 0.1, 1.0]]))
    assert float(low.floors[0]) == 0.0
    assert calibrated.margins(np.array([0]), own[None], np.array([1.0]), 0.9)[0] >= 0
    with pytest.raises(ConfigError, match="subject_swaps >= 2"):
        MemoirConfig(router="rerank", subject_swaps=1, subject_calibrate=True)


def test_a_calibrated_state_round_trips_and_a_plain_one_is_refused(tmp_path):
    editor = _editor("memoir+", n_iter=3)
    for request in _requests(3):
        editor.edit(request)
    assert editor.subjects.calibrated and len(editor.subjects.floors) == 3
    editor.save_state(tmp_path / "s")
    again = _editor("memoir+")
    again.load_state(tmp_path / "s")
    assert torch.equal(again.subjects.floors, editor.subjects.floors)
    with pytest.raises(EditkitError, match="subject_floors"):
        _editor("memoir+", subject_calibrate=False).load_state(tmp_path / "s")


def test_the_subject_check_state_round_trips(tmp_path):
    editor = _editor(router="rerank", subject_swaps=4, n_iter=3)
    for request in _requests(3):
        editor.edit(request)
    assert len(editor.subjects) == len(editor.database) == 3
    editor.save_state(tmp_path / "s")
    again = _editor(router="rerank", subject_swaps=4)
    again.load_state(tmp_path / "s")
    assert torch.equal(again.subjects.relations, editor.subjects.relations) and torch.equal(again.subjects.gaps, editor.subjects.gaps)
    batch = encode(editor.tokenizer, [r.prompt for r in _requests(4)], ["ab"] * 4)
    assert torch.equal(again.logits(batch), editor.logits(batch))
    with pytest.raises(EditkitError, match="subject_relations"):
        _editor(router="rerank").load_state(tmp_path / "s")
    editor.reset()
    assert len(editor.subjects) == 0


def test_extra_iter_steps_only_an_unconverged_edit_and_stops_once_it_converges():
    request = _requests(1)[0]
    # a step too small to converge in n_iter: the extra steps are all taken
    slow = _editor(n_iter=3, extra_iter=4, lr=1e-6, num_prefixes=0).edit(request)
    assert slow["iterations"] == 7 and slow["loss"] > 0.02
    # a normal step: the edit converges within the extra steps and stops there, at a loss at or below the bar
    base = _editor(n_iter=3, lr=4.0, num_prefixes=0).edit(request)
    assert base["iterations"] == 3
    bar = 0.8 * base["loss"]  # not reached in 3 steps (the tiny random model learns slowly)
    extra = _editor(n_iter=3, extra_iter=200, lr=4.0, num_prefixes=0, early_stop_loss=bar).edit(request)
    assert 3 < extra["iterations"] < 203 and extra["loss"] <= bar
    with pytest.raises(ConfigError, match="extra_iter"):
        MemoirConfig(extra_iter=-1)


def test_the_subject_margin_grows_with_stored_edits_beyond_its_reference():
    """Up to ``subject_margin_from`` stored masks the margin is ``subject_margin`` exactly (a stream of
    that length routes as without the option); beyond, ``subject_margin_growth`` per tenfold, and routing
    asks for it."""
    editor = _editor("memoir+", subject_margin_growth=0.1, subject_margin_from=2)
    editor.prepare([])
    assert editor.subject_margin() == 0.02  # nothing stored
    requests = _requests(18)
    editor.remember(requests[:2])
    assert editor.subject_margin() == 0.02
    editor.remember(requests[2:])
    stored = len(editor.database)
    assert stored > 2 and editor.subject_margin() == pytest.approx(0.02 + 0.1 * np.log10(stored / 2))
    batch = encode(editor.tokenizer, [r.prompt for r in requests], device=editor.device)
    asked = []
    original = editor.subjects.margins
    editor.subjects.margins = lambda rows, queries, cosines, margin: asked.append(margin) or original(rows, queries, cosines, margin)
    editor.routing_scores(batch)
    assert asked == [pytest.approx(editor.subject_margin())]
    for bad in ({"subject_margin_growth": -0.1}, {"subject_margin_from": 0}, {"subject_margin_from": 2.5}):
        with pytest.raises(ConfigError):
            MemoirConfig(**bad)


def test_rival_lead_is_the_chosen_cosine_over_other_subjects_candidates():
    table = SubjectTable(3)
    features = F.normalize(torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0.9, 0, 0.1]]), dim=1)
    table.relations = torch.tensor([[0.0, 1, 0]] * 3)  # one relation; subject parts f - r
    # row 2 is row 0's sibling (parts' cosine .99); row 1 another subject (.5 with row 0)
    shortlists = [(np.array([0, 1, 2]), np.array([0.9, 0.7, 0.85])), (np.array([1]), np.array([0.8])), (np.zeros(0, np.int64), np.zeros(0))]
    rows = np.array([0, 1, -1])
    leads = table.rival_leads(shortlists, rows, features, same_subject=0.6)
    assert leads[0] == pytest.approx(0.2) and leads[1] == np.inf and leads[2] == np.inf  # the sibling is no rival
    assert table.rival_leads(shortlists, rows, features, same_subject=0.4)[0] == np.inf  # now row 1 counts as the subject
    reranked = []
    FeatureTable.rerank(_table(features), np.array([[9, 8, 7]], dtype=np.uint16), torch.tensor([[1.0, 0, 0]]), 5, 3, 10, reranked)
    assert reranked[0][0].tolist() == [0, 1, 2] and reranked[0][1] == pytest.approx([1.0, 0.0, features[2, 0].item()])
    with pytest.raises(ConfigError, match="rival_lead needs the subject check"):
        MemoirConfig(router="rerank", rival_lead=0.1)


def _table(features: torch.Tensor) -> FeatureTable:
    table = FeatureTable(features.shape[1])
    for row in features:
        table.add(row)
    return table


def test_rival_check_only_lowers_routing_scores_and_routing_follows_them():
    requests = _requests(9)
    plain, rival = (_editor(router="rerank", tau=0.5, n_iter=2, subject_swaps=4, rival_lead=lead) for lead in (0.0, 0.3))
    for request in requests:
        plain.edit(request)
        rival.edit(request)
    prompts = [r.prompt for r in requests] + ["Grass is", "The capital of Ulm is", "Tell me: Zed plays the"]
    batch = encode(rival.tokenizer, prompts, ["xyz"] * len(prompts))
    before, after = plain.routing_scores(batch), rival.routing_scores(batch)
    assert all(a <= b + 1e-9 for a, b in zip(after.scores, before.scores))
    assert any(a < b - 1e-6 for a, b in zip(after.scores, before.scores))  # it acts: some query has a close rival
    routed = [not torch.equal(a, b) for a, b in zip(rival.logits(batch), _editor().logits(batch))]
    assert routed == [s >= after.threshold for s in after.scores]
