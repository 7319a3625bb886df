"""Scorer arithmetic on hand-made cases whose right answer is known exactly."""

import pytest
import torch

from editkit import EditRequest
from editkit.baseline import UneditedEditor
from editkit.batching import tokenize_pair
from editkit.evaluation.scorers import GenerationScorer, TeacherForcedScorer
from editkit.testing import BigramModel, tiny_model_and_tokenizer, tiny_tokenizer


@pytest.fixture()
def tok():
    return tiny_tokenizer()


def chain(tok, prompt: str, target: str, wrong_at: int | None = None) -> torch.Tensor:
    """A bigram table that continues ``prompt`` with ``target`` token by token (except at ``wrong_at``)."""
    prompt_ids, target_ids = tokenize_pair(tok, prompt, target)
    table = torch.zeros(len(tok), dtype=torch.long)
    context = [prompt_ids[-1]] + target_ids[:-1]
    for k, (cur, nxt) in enumerate(zip(context, target_ids)):
        table[cur] = nxt if k != wrong_at else (nxt + 1) % len(tok)
    return table


def editor_for(table, tok):
    return UneditedEditor(BigramModel(table=table), tok)


def test_tf_gives_partial_credit_and_gen_needs_every_token(tok):
    prompt, target = "Qz", "abc"
    n = len(tokenize_pair(tok, prompt, target)[1])
    assert n == 4  # " ", "a", "b", "c"
    wrong = editor_for(chain(tok, prompt, target, wrong_at=2), tok)
    right = editor_for(chain(tok, prompt, target), tok)
    tf, gen = TeacherForcedScorer(tok), GenerationScorer(tok)
    assert tf.target_scores(wrong, [(prompt, target)]) == [pytest.approx(3 / 4)]
    assert gen.target_scores(wrong, [(prompt, target)]) == [0.0]
    assert tf.target_scores(right, [(prompt, target)]) == [1.0]
    assert gen.target_scores(right, [(prompt, target)]) == [1.0]


def test_locality_compares_with_cached_unedited_predictions(tok):
    loc_prompt, loc_answer = "Kp", "xyz"
    request = EditRequest("0", "Qz", "abc", locality=[(loc_prompt, loc_answer)])
    before = chain(tok, loc_prompt, loc_answer)  # what the unedited model predicts
    after = before.clone()
    _, answer_ids = tokenize_pair(tok, loc_prompt, loc_answer)
    after[answer_ids[1]] = (after[answer_ids[1]] + 5) % len(tok)  # one answer position now predicts otherwise
    for scorer, expected in ((TeacherForcedScorer(tok), 3 / 4), (GenerationScorer(tok), 0.0)):
        scorer.prepare(editor_for(before, tok), [request], [(0,)])
        rows = scorer.score(editor_for(after, tok), [request], 1, (0,), (0,))
        loc = [r for r in rows if r.metric == "locality"]
        assert [r.value for r in loc] == [pytest.approx(expected)]
        unchanged = scorer.score(editor_for(before, tok), [request], 1, (0,), (0,))
        assert [r.value for r in unchanged if r.metric == "locality"] == [1.0]


def test_generalization_is_the_mean_over_rephrases(tok):
    target = "ab"
    table = chain(tok, "Qz", target)  # "z" continues correctly; the rephrase ending in "y" does not
    request = EditRequest("7", "Qz", target, rephrases=("Wz", "Wy"), locality=[("Kp", "q")])
    scorer = TeacherForcedScorer(tok)
    editor = editor_for(table, tok)
    scorer.prepare(editor, [request], [(0,)])
    rows = {r.metric: r.value for r in scorer.score(editor, [request], 1, (0,), (0,))}
    y_score = scorer.target_scores(editor, [("Wy", target)])[0]
    assert rows["reliability"] == 1.0
    assert rows["generalization"] == pytest.approx((1.0 + y_score) / 2)
    assert y_score < 1.0


def test_score_without_prepare_is_an_error(tok):
    from editkit.errors import EditkitError

    request = EditRequest("0", "Qz", "abc", locality=[("Kp", "q")])
    with pytest.raises(EditkitError):
        TeacherForcedScorer(tok).score(editor_for(chain(tok, "Qz", "abc"), tok), [request], 1, (0,), (0,))


@pytest.mark.parametrize("scorer_class", [TeacherForcedScorer, GenerationScorer])
def test_batched_scores_equal_one_by_one(scorer_class):
    model, tok = tiny_model_and_tokenizer()
    editor = UneditedEditor(model, tok)
    pairs = [("The capital of France is", "Paris"), ("Hi", "there you"), ("Who wrote Hamlet?", "Shakespeare"), ("x", "y")]
    batched = scorer_class(tok, batch_size=4).target_scores(editor, pairs)
    alone = [scorer_class(tok, batch_size=1).target_scores(editor, [p])[0] for p in pairs]
    assert batched == alone
    # non-trivial: the random tiny model gets some but not all target tokens
    ref = scorer_class(tok, batch_size=4).locality_outputs(editor, pairs)
    one = [scorer_class(tok, batch_size=1).locality_outputs(editor, [p])[0] for p in pairs]
    assert all(torch.equal(a, b) for a, b in zip(ref, one))
