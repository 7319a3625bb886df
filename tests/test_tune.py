"""``editkit tune``: slices, grids, selection, and the refusal of a dev slice that touches the test slice."""

import json

import pytest

from editkit.data import load_requests
from editkit.errors import EditkitError
from editkit.evaluation.streams import make_stream
from editkit.tune import Slice, check_disjoint, grid_points, parse_grid, parse_slice, select
from test_cli import assert_one_line_error, data_file, editkit, tiny_dir  # noqa: F401 (fixtures)


def test_parse_slice_and_grid():
    assert parse_slice("zsre-dev", "--dev") == Slice("zsre-dev", "zsre-dev", 0, None)
    assert parse_slice("default@0:50", "--test") == Slice("default@0:50", "default", 0, 50)
    assert parse_slice("../data/cf.json@6000:100", "--dev") == Slice("../data/cf.json@6000:100", "../data/cf.json", 6000, 100)
    for bad in ("", "default@0:0"):
        with pytest.raises(EditkitError):
            parse_slice(bad, "--dev")
    grid = parse_grid(["tau=0.45,0.5,0.55", "lr=1,2"])
    assert grid == {"tau": ["0.45", "0.5", "0.55"], "lr": ["1", "2"]}
    assert grid_points(grid)[:3] == [{"tau": "0.45", "lr": "1"}, {"tau": "0.45", "lr": "2"}, {"tau": "0.5", "lr": "1"}]
    assert len(grid_points(grid)) == 6
    for bad in ([], ["tau"], ["tau="], ["tau=1,1"], ["tau=1", "tau=2"]):
        with pytest.raises(EditkitError, match="--grid"):
            parse_grid(bad)


def test_select_takes_the_best_and_the_earlier_of_a_tie():
    assert select([({"a": "1"}, 0.5), ({"a": "2"}, 0.7), ({"a": "3"}, 0.7)]) == {"a": "2"}


def test_overlapping_slices_are_refused_by_id_and_by_prompt():
    requests = load_requests("default")
    dev, test = parse_slice("default@0:10", "--dev"), parse_slice("default@5:10", "--test")
    with pytest.raises(EditkitError, match="share request '5'"):
        check_disjoint(make_stream(requests, 10).requests, make_stream(requests, 10, start=5).requests, dev, test)
    renamed = [type(r)(**{**r.__dict__, "id": f"x{r.id}"}) for r in requests[:10]]  # same prompts, other ids
    with pytest.raises(EditkitError, match="share the prompt"):
        check_disjoint(renamed, requests[:10], dev, test)
    check_disjoint(load_requests("zsre-dev"), requests[:50], parse_slice("zsre-dev", "--dev"), parse_slice("default@0:50", "--test"))


def test_cli_refuses_overlapping_slices_before_anything_runs(tmp_path):
    code, _, err = editkit("tune", "memoir", "--grid", "tau=0.45,0.5", "--dev", "default@0:10", "--test", "default@5:10", "--out", tmp_path / "t")
    assert_one_line_error(code, err, "--dev default@0:10 and --test default@5:10 share request '5'")
    assert not (tmp_path / "t").exists()


def test_cli_refuses_a_bad_grid_value_and_data_options(tmp_path):
    code, _, err = editkit("tune", "ft", "--grid", "lr=fast", "--dev", "zsre-dev", "--test", "default@0:5", "--out", tmp_path / "t")
    assert_one_line_error(code, err, "lr", "fast")
    code, _, err = editkit("tune", "ft", "--grid", "lr=1", "--dev", "zsre-dev", "--test", "default@0:5", "--num-edits", "3")
    assert_one_line_error(code, err, "--num-edits cannot be used")
    assert not (tmp_path / "t").exists()


def test_tune_end_to_end_on_the_tiny_model(tiny_dir, tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"Who made item {i}?", "target": f"maker {i}", "rephrases": [f"Item {i} was made by"], "locality": [{"prompt": f"Fact {i} is", "answer": "true"}]} for i in range(5)]
    data = tmp_path / "edits.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "tune"
    args = ["tune", "ft", "--grid", "lr=1e-3,1e-2", "--grid", "steps=2", "--dev", f"{data}@0:2", "--test", f"{data}@2:3"]
    code, stdout, err = editkit(*args, "--model", tiny_dir, "--scorers", "tf", "--threads", "1", "--no-progress", "--out", out)
    assert code == 0, err
    selection = json.loads((out / "tune.json").read_text())
    assert [d["config"] for d in selection["dev_scores"]] == [{"lr": "1e-3", "steps": "2"}, {"lr": "1e-2", "steps": "2"}]
    scores = [d["score"] for d in selection["dev_scores"]]
    assert selection["chosen"] == selection["dev_scores"][scores.index(max(scores))]["config"]
    for d in selection["dev_scores"]:  # each dev score is that dev run's mean of tf rel, gen, loc
        summary = json.loads((out / "dev" / f"lr={d['config']['lr']},steps=2" / "summary.json").read_text())
        assert d["score"] == pytest.approx(sum(r["mean"] for r in summary if r["scorer"] == "tf") / 3)
        assert {r["stream"] for r in summary} != set()
    config = json.loads((out / "test" / "ft" / "config.json").read_text())
    assert config["num_edits"] == 3 and config["method_config"]["lr"] == float(selection["chosen"]["lr"])
    assert config["tuning"]["dev"] == f"{data}@0:2" and config["tuning"]["grid"] == {"lr": ["1e-3", "1e-2"], "steps": ["2"]}
    assert config["tuning"]["criterion"] == "mean" and config["tuning"]["dev_scores"] == selection["dev_scores"]
    assert "tuning" not in json.loads((out / "test" / "none" / "config.json").read_text())
    summary = json.loads((out / "test" / "summary.json").read_text())
    assert {r["tuned_on"] for r in summary if r["method"] == "ft"} == {f"{data}@0:2"}
    assert {r["tuned_on"] for r in summary if r["method"] == "none"} == {None}
    assert "<- chosen" in stdout and f"ft tuned on {data}@0:2" in stdout
    code, report, err = editkit("report", out / "test", "--no-plots")
    assert code == 0, err
    assert f"ft tuned on {data}@0:2" in report
