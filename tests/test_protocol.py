"""Streams, schedules, the harness and the results directory, on the tiny model."""

import json

import pytest

from editkit import EditRequest
from editkit.errors import EditkitError
from editkit.evaluation import Harness, Schedule, compare, make_stream, stream_hash
from editkit.evaluation.store import prepare_output_dir
from editkit.registry import get_editor_spec
from editkit.testing import tiny_model_and_tokenizer


def requests(n=6):
    return [
        EditRequest(
            id=str(i),
            prompt=f"Question {i}: who made item {i}?",
            target=f"maker {i % 3}",
            rephrases=(f"Item {i} was made by whom?",),
            locality=((f"Unrelated fact {i} is", f"true {i}"),),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "text, steps",
    [("final", [7]), ("immediate", [1, 2, 3, 4, 5, 6, 7]), ("every:3", [3, 6, 7]), ("every:7", [7]), ("every:10", [7])],
)
def test_schedule_steps(text, steps):
    assert [cp.step for cp in Schedule.parse(text).plan(7)] == steps


def test_schedule_items():
    final = Schedule.parse("final").plan(4)[0]
    assert final.edits == final.locality == (0, 1, 2, 3)
    immediate = Schedule.parse("immediate").plan(4)
    assert [(cp.edits, cp.locality) for cp in immediate] == [((i,), (i,)) for i in range(4)]
    every = Schedule.parse("every:2").plan(5)
    assert [cp.edits for cp in every] == [(0, 1), (0, 1, 2, 3), (0, 1, 2, 3, 4)]
    assert all(cp.locality == (0, 1, 2, 3, 4) for cp in every)  # one fixed locality set per curve


def test_sampled_schedule_scores_the_same_requests_at_every_checkpoint():
    schedule = Schedule.parse("every:4,sample:3")
    assert str(schedule) == "every:4,sample:3" and Schedule.parse(str(schedule)) == schedule
    plan = schedule.plan(10)
    assert [cp.step for cp in plan] == [4, 8, 10]
    assert [cp.edits for cp in plan] == [(0, 3), (0, 3, 6), (0, 3, 6)]
    assert all(cp.locality == (0, 3, 6) for cp in plan)
    assert Schedule.parse("every:4,sample:50").plan(10) == Schedule.parse("every:4").plan(10)


@pytest.mark.parametrize("bad", ["", "every", "every:0", "every:x", "sometimes", "every:2,sample:0", "every:2,sample:x", "final,sample:3"])
def test_bad_schedule(bad):
    with pytest.raises(EditkitError, match="schedule"):
        Schedule.parse(bad)


def test_stream_hash_depends_on_content_and_order():
    reqs = requests()
    assert stream_hash(reqs) == stream_hash(list(reqs))
    assert stream_hash(reqs) != stream_hash(reqs[::-1])
    changed = reqs[:1] + [EditRequest("1", reqs[1].prompt, "other", reqs[1].rephrases, reqs[1].locality)] + reqs[2:]
    assert stream_hash(reqs) != stream_hash(changed)


def test_contested_edits_are_subjects_given_two_targets():
    from editkit.evaluation.streams import contested_edits

    reqs = [
        EditRequest("a", "Where is Foo?", "Paris", subject="Foo"),
        EditRequest("b", "In which city is foo?", " paris ", subject="foo "),  # same subject and target, folded
        EditRequest("c", "What is Bar?", "red", subject="Bar"),
        EditRequest("d", "Bar is what?", "blue", subject="Bar"),
        EditRequest("e", "What is Baz?", "green"),  # no subject: never contested
        EditRequest("f", "What is Baz?", "grey"),
    ]
    assert contested_edits(reqs) == {"c", "d"}
    assert contested_edits(reqs[:3]) == frozenset()


def test_locality_in_reach_names_other_edits_subjects_as_whole_words():
    from editkit.evaluation.streams import locality_in_reach

    reqs = [
        EditRequest("a", "Foo Bar lives in", "Rome", locality=[("Foo Bar Baz lives in", "Oslo"), ("Qux lives in", "Lima")], subject="Foo Bar"),
        EditRequest("b", "Qux lives in", "Kyiv", locality=[("Quxley lives in", "Bonn")], subject="Qux"),
        EditRequest("c", "Foo Bar Baz lives in", "Nice", locality=[("Foo Bar lives in", "Rome")], subject="Foo Bar Baz"),
    ]
    # a's first prompt names c's subject (the longest match wins over its own), its second b's; "Quxley" is not "Qux"
    assert locality_in_reach(reqs) == {"a": ((0, "Foo Bar Baz"), (1, "Qux")), "c": ((0, "Foo Bar"),)}
    assert locality_in_reach([EditRequest("x", "p", "t", locality=[("p", "q")])]) == {}


def test_make_stream_first_n_and_seeded_shuffle():
    reqs = requests(10)
    assert [r.id for r in make_stream(reqs, 3).requests] == ["0", "1", "2"]
    a, b = make_stream(reqs, 5, shuffle_seed=1), make_stream(reqs, 5, shuffle_seed=1)
    assert a.hash == b.hash and a.order == "shuffle:1"
    assert make_stream(reqs, 5, shuffle_seed=2).hash != a.hash
    with pytest.raises(EditkitError, match="exceeds"):
        make_stream(reqs, 11)
    with pytest.raises(EditkitError, match="more than once"):
        make_stream(reqs + reqs[:1])
    held_out = make_stream(reqs, 3, start=6)
    assert [r.id for r in held_out.requests] == ["6", "7", "8"] and held_out.order == "file[6:]"
    with pytest.raises(EditkitError, match="--start 10 is outside"):
        make_stream(reqs, start=10)


def make_harness(schedule="final", n=6, scorers=("tf", "gen")):
    model, tok = tiny_model_and_tokenizer()
    return Harness(
        model=model,
        tokenizer=tok,
        stream=make_stream(requests(n)),
        schedule=Schedule.parse(schedule),
        scorer_names=list(scorers),
        model_info={"model_id": "tiny-llama", "weights_sha256": "x", "dtype": "float32", "device": "cpu"},
        dataset_info={"name": "hand-made", "path": None, "sha256": None},
        batch_size=4,
        progress=False,
    )


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("schedule", ["final", "immediate", "every:4"])
def test_unedited_run_writes_the_run_directory(tmp_path, schedule):
    harness = make_harness(schedule)
    spec = get_editor_spec("none")
    rows = compare(harness, [(spec, spec.make_config())], tmp_path)
    run = tmp_path / "none"
    for name in ("config.json", "results.jsonl", "edits.jsonl", "summary.json", "state"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    for key in ("method", "method_config", "model", "dataset", "stream_hash", "num_edits", "seed", "schedule", "scorers", "versions"):
        assert key in config
    results = read_jsonl(run / "results.jsonl")
    assert {r["metric"] for r in results} == {"reliability", "generalization", "locality"}
    assert all(r["stream"] == harness.stream.hash and r["schedule"] == schedule for r in results)
    assert len(read_jsonl(run / "edits.jsonl")) == 6
    # the unedited model agrees with its own cached predictions exactly, whatever the schedule batches
    assert all(r["value"] == 1.0 for r in results if r["metric"] == "locality")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads((run / "summary.json").read_text())
    assert {r["step"] for r in summary} == ({4, 6} if schedule == "every:4" else {6})
    assert {(r.metric, r.scorer) for r in rows} == {(m, s) for m in ("reliability", "generalization", "locality") for s in ("tf", "gen")}


def test_summary_means_match_results(tmp_path):
    harness = make_harness("every:3")
    spec = get_editor_spec("none")
    rows = compare(harness, [(spec, spec.make_config())], tmp_path)
    results = read_jsonl(tmp_path / "none" / "results.jsonl")
    for row in rows:
        values = [r["value"] for r in results if (r["metric"], r["scorer"], r["step"]) == (row.metric, row.scorer, row.step)]
        assert row.n == len(values) and row.mean == pytest.approx(sum(values) / len(values))
    reliability_at_3 = [r for r in results if r["metric"] == "reliability" and r["step"] == 3 and r["scorer"] == "tf"]
    assert [r["edit_id"] for r in reliability_at_3] == ["0", "1", "2"]


def test_same_stream_and_scores_for_every_method(tmp_path):
    harness = make_harness("final")
    runs = [(get_editor_spec(n), get_editor_spec(n).make_config()) for n in ("none", "ft")]
    rows = compare(harness, runs, tmp_path)
    configs = [json.loads((tmp_path / n / "config.json").read_text()) for n in ("none", "ft")]
    assert configs[0]["stream_hash"] == configs[1]["stream_hash"] == harness.stream.hash
    assert {r.method for r in rows} == {"none", "ft"}
    again = compare(make_harness("final"), runs, tmp_path / "again")
    assert [(r.method, r.metric, r.scorer, r.mean) for r in rows] == [(r.method, r.metric, r.scorer, r.mean) for r in again]


def test_output_dir_is_never_silently_reused(tmp_path):
    (tmp_path / "summary.json").write_text("[]")
    with pytest.raises(EditkitError, match="already holds results"):
        prepare_output_dir(tmp_path, overwrite=False)
    assert (tmp_path / "summary.json").read_text() == "[]"
    with pytest.raises(EditkitError, match="did not mark as its own run"):  # not a run editkit made
        prepare_output_dir(tmp_path, overwrite=True)
    assert (tmp_path / "summary.json").read_text() == "[]"
    (tmp_path / "summary.json").unlink()
    prepare_output_dir(tmp_path, overwrite=False).release()  # a run directory now, that owns its summary
    (tmp_path / "summary.json").write_text("[]")
    prepare_output_dir(tmp_path, overwrite=True).release()
    assert not (tmp_path / "summary.json").exists()
