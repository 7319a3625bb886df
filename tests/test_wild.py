"""The wild scorer (free generation judged as text), its answer normalisation and F1, and fluency."""

import pytest
import torch

from editkit import EditRequest
from editkit.baseline import UneditedEditor
from editkit.batching import tokenize_pair
from editkit.errors import EditkitError
from editkit.evaluation.answers import exact_match, first_line, normalize_answer, token_f1
from editkit.evaluation.fluency import fluency, ngram_entropy
from editkit.evaluation.scorers import WildScorer, load_judge
from editkit.testing import BigramModel, tiny_model_and_tokenizer, tiny_tokenizer


@pytest.mark.parametrize(
    "text, normal",
    [
        ("The Eiffel Tower.", "eiffel tower"),
        ("  an   Apple,  a day ", "apple day"),
        ("Théâtre — du Soleil!", "théâtre du soleil"),
        ("There", "there"),  # an article only as a whole word
        ("", ""),
    ],
)
def test_normalisation(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_and_f1_on_hand_cases():
    assert exact_match("The Beatles!", "beatles") == 1.0
    assert exact_match("Beatles band", "beatles") == 0.0
    assert token_f1("Beatles band", "the beatles") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # p 1/2, r 1
    assert token_f1("new york city", "york new") == pytest.approx(0.8)  # bag of words: p 2/3, r 1
    assert token_f1("paris", "london") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0 and token_f1("the", "a") == 1.0  # both empty after normalising


def test_first_line_skips_leading_blank_lines():
    assert first_line("\n\n  Paris is the capital.\nNext question") == "Paris is the capital."
    assert first_line("") == ""


def test_fluency_on_hand_made_texts():
    assert ngram_entropy("a b") == pytest.approx((2 / 3 * 0.0 + 4 / 3 * 0.0) / 2)  # one bigram, no trigram
    # four distinct bigrams (2 bits) and three distinct trigrams (log2 3 bits)
    assert ngram_entropy("a b c d e") == pytest.approx((2 / 3 * 2.0 + 4 / 3 * torch.log2(torch.tensor(3.0)).item()) / 2)
    assert ngram_entropy("paris paris paris paris paris paris") == 0.0  # repetition has no entropy
    varied, repeated = "The city is known for its museums, its food and its river.", "the the the the the the the the"
    assert ngram_entropy(varied) > ngram_entropy(repeated)
    assert fluency([varied, repeated]) == pytest.approx((ngram_entropy(varied) + ngram_entropy(repeated)) / 2)


def continue_with(tok, prompt: str, text: str, table: torch.Tensor | None = None) -> torch.Tensor:
    """A bigram table under which ``prompt`` continues with ``text`` and then the end of sequence (a
    bigram model can only say texts in which no character is followed by two different ones)."""
    ids = tokenize_pair(tok, prompt, text)[1] + [tok.eos_token_id]
    table = table.clone() if table is not None else torch.zeros(len(tok), dtype=torch.long)
    for cur, nxt in zip([tokenize_pair(tok, prompt, None)[0][-1]] + ids[:-1], ids):
        table[cur] = nxt
    return table


def test_wild_scores_the_free_answer_up_to_its_stop():
    tok = tiny_tokenizer()
    scorer = WildScorer(tok)
    exact = UneditedEditor(BigramModel(table=continue_with(tok, "Qz", "Ab.")), tok)
    assert scorer.answers(exact, ["Qz"]) == ["Ab."]
    assert scorer.target_values(exact, [("Qz", "ab")]) == {"wild": [1.0], "wild-f1": [1.0]}
    # after a prompt that ends a line (a chat template's), the answer starts without a space
    longer = UneditedEditor(BigramModel(table=continue_with(tok, "Qz\n", "ab cd")), tok)
    assert scorer.answers(longer, ["Qz\n"]) == ["ab cd"]
    values = scorer.target_values(longer, [("Qz\n", "ab")])
    assert values["wild"] == [0.0] and values["wild-f1"] == [pytest.approx(2 / 3)]  # p 1/2, r 1
    # a newline ends the answer: what follows is not part of it
    two_lines = UneditedEditor(BigramModel(table=continue_with(tok, "Qz", "ab\ncd")), tok)
    assert scorer.answers(two_lines, ["Qz"]) == ["ab"]
    # without an end of sequence, decoding stops at max_new_tokens
    endless = continue_with(tok, "Qz", "ab")
    endless[tok.convert_tokens_to_ids("b")] = tok.convert_tokens_to_ids("b")
    assert scorer.answers(UneditedEditor(BigramModel(table=endless), tok), ["Qz"]) == ["a" + "b" * (scorer.max_new_tokens - 2)]


def test_early_stop_changes_no_answer_and_decodes_less(monkeypatch):
    """A batch stops decoding once every row has ended its answer's first line or hit a stop token; the
    answers are those of the full-length decode: a leading blank line then an endless two-line text, and an
    answer ended by the end of sequence."""
    tok = tiny_tokenizer()
    table = torch.zeros(len(tok), dtype=torch.long)

    def chain(prompt: str, text: str, end: list[int]) -> None:
        ids = list(tok(prompt).input_ids[-1:]) + list(tok(text, add_special_tokens=False).input_ids) + end
        for cur, nxt in zip(ids, ids[1:]):
            table[cur] = nxt

    chain("Qy", "\ncd\n", [tok("c", add_special_tokens=False).input_ids[0]])  # "\ncd\ncd\ncd..." never ends
    chain("Qz\t", "ef", [tok.eos_token_id])
    prompts = ["Qy", "Qz\t"] * 3
    scorer = WildScorer(tok, batch_size=4)
    editor = UneditedEditor(BigramModel(table=table), tok)
    columns: list[int] = []
    generate = editor.generate
    monkeypatch.setattr(editor, "generate", lambda *a, **k: columns.append((out := generate(*a, **k)).shape[1]) or out)
    early = scorer.answers(editor, prompts)
    stopped = list(columns)
    monkeypatch.setattr(scorer, "_complete", lambda so_far, answer: torch.zeros(so_far.shape[0], dtype=torch.bool))
    assert scorer.answers(editor, prompts) == early == ["cd", "ef"] * 3
    assert max(stopped) == 4 and columns[len(stopped):] == [scorer.max_new_tokens] * len(stopped)  # newline, c, d, newline


def test_wild_locality_is_exactly_one_for_the_unedited_model_and_drops_for_a_change():
    model, tok = tiny_model_and_tokenizer()
    stream = [
        EditRequest(str(i), f"Question {i}?", f"answer {i}", rephrases=(f"Q{i}?",), locality=[(f"Other fact {i} is", "x"), (f"Fact {i}", "y")])
        for i in range(3)
    ]
    scorer = WildScorer(tok, batch_size=4)  # locality pairs in two batches
    scorer.fluency_tokens = 8
    unedited = UneditedEditor(model, tok)
    scorer.prepare(unedited, stream, [tuple(range(3))])
    rows = scorer.score(unedited, stream, 3, tuple(range(3)), tuple(range(3)))
    locality = [r for r in rows if r.metric == "locality"]
    assert {r.scorer for r in locality} == {"wild", "wild-f1"} and len(locality) == 6
    assert all(r.value == 1.0 for r in locality)
    assert {r.metric for r in rows} == {"reliability", "generalization", "locality", "fluency"}  # no portability here
    changed, _ = tiny_model_and_tokenizer(seed=3)
    after = scorer.score(UneditedEditor(changed, tok), stream, 3, tuple(range(3)), tuple(range(3)))
    assert any(r.value < 1.0 for r in after if r.metric == "locality")


def test_portability_is_scored_by_every_scorer_where_requests_carry_it():
    from editkit.evaluation.scorers import SCORERS

    model, tok = tiny_model_and_tokenizer()
    stream = [EditRequest("0", "Q?", "a", locality=[("L", "b")], portability=[("Hop question?", "c"), ("Other hop?", "d")])]
    for name, scorer_class in SCORERS.items():
        scorer = scorer_class(tok)
        scorer.fluency_tokens = 4
        editor = UneditedEditor(model, tok)
        scorer.prepare(editor, stream, [(0,)])
        rows = [r for r in scorer.score(editor, stream, 1, (0,), (0,)) if r.metric == "portability"]
        assert rows and all(r.edit_id == "0" and 0 <= r.value <= 1 for r in rows), name
        values = scorer.target_values(editor, [("Hop question?", "c"), ("Other hop?", "d")])[scorer.name]
        assert next(r.value for r in rows if r.scorer == scorer.name) == pytest.approx(sum(values) / 2)


def judge_contains(question: str, answer: str, reference: str) -> float:
    return float(reference.lower() in answer.lower())


def judge_broken(question: str, answer: str, reference: str) -> float:
    return 2.0


def test_external_judge_hook():
    tok = tiny_tokenizer()
    editor = UneditedEditor(BigramModel(table=continue_with(tok, "Qz\n", "xy ab")), tok)
    scorer = WildScorer(tok, options={"judge": load_judge("test_wild:judge_contains"), "judge_name": "test_wild:judge_contains"})
    assert scorer.target_values(editor, [("Qz\n", "ab")]) == {"wild": [0.0], "wild-f1": [pytest.approx(2 / 3)], "wild-judge": [1.0]}
    bad = WildScorer(tok, options={"judge": judge_broken, "judge_name": "test_wild:judge_broken"})
    with pytest.raises(EditkitError, match="test_wild:judge_broken: returned 2.0"):
        bad.target_values(editor, [("Qz\n", "ab")])
    for spec, message in (("nocolon", "expected MODULE:FUNCTION"), ("no_such_module_xyz:f", "cannot import"), ("test_wild:absent", "no callable")):
        with pytest.raises(EditkitError, match=message):
            load_judge(spec)


def test_fluency_text_has_a_fixed_length_whatever_the_stop_tokens():
    """ROME/KnowEdit fluency: every edit prompt's text is its prompt plus ``fluency_tokens`` generated
    tokens, an end of sequence included, so a model that stops at once is not scored on its prompt alone."""
    tok = tiny_tokenizer()
    table = continue_with(tok, "Qz", "ab")  # "ab", then the end of sequence, then (after it) "a" forever
    table[tok.eos_token_id] = tok.convert_tokens_to_ids("a")
    table[tok.convert_tokens_to_ids("a")] = tok.convert_tokens_to_ids("b")
    editor = UneditedEditor(BigramModel(table=table), tok)
    scorer = WildScorer(tok)
    scorer.fluency_tokens = 9
    assert scorer.answers(editor, ["Qz"]) == ["ab"]  # the answer still stops at the end of sequence
    (row,) = scorer.extra_scores(editor, [EditRequest("0", "Qz", "ab")], 1)
    assert row.metric == "fluency" and row.value == pytest.approx(ngram_entropy("Qzab" + "ab" * 3))
