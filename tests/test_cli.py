"""The command line as a user meets it: exit code 2 and one line for every mistake, real runs on a tiny model."""

import json
import subprocess
import sys

import pytest
from conftest import request_rows

from editkit.testing import tiny_model_and_tokenizer


def editkit(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "editkit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    model, tok = tiny_model_and_tokenizer()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "edits.jsonl"
    rows = request_rows(4)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_method(tiny_dir, data_file, tmp_path):
    code, _, err = editkit("compare", "--methods", "nope", "--model", tiny_dir, "--data", data_file, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "unknown method 'nope'", "ft")
    assert not (tmp_path / "o").exists()


def test_missing_data_file(tiny_dir, tmp_path):
    code, _, err = editkit("run", "ft", "--model", tiny_dir, "--data", tmp_path / "absent.json", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "absent.json")
    assert not (tmp_path / "o").exists()


def test_malformed_record(tiny_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "prompt": "p", "target": "t"}) + "\n" + json.dumps({"id": "b", "prompt": "p"}) + "\n")
    code, _, err = editkit("run", "ft", "--model", tiny_dir, "--data", bad, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "bad.jsonl", "target")


def test_bad_layer_path(tiny_dir, data_file, tmp_path):
    code, _, err = editkit(
        "run", "ft", "--set", "layer=model.layers.99.mlp.down_proj", "--model", tiny_dir, "--data", data_file, "--out", tmp_path / "o"
    )
    assert_one_line_error(code, err, "model.layers.99.mlp.down_proj")


def test_bad_option_value_and_schedule(tiny_dir, data_file, tmp_path):
    code, _, err = editkit("run", "ft", "--set", "lr=fast", "--model", tiny_dir, "--data", data_file, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "lr")
    code, _, err = editkit("run", "ft", "--schedule", "sometimes", "--model", tiny_dir, "--data", data_file, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "schedule")


def test_existing_results_are_not_overwritten(tiny_dir, data_file, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "summary.json").write_text("[1]")
    code, _, err = editkit("run", "none", "--model", tiny_dir, "--data", data_file, "--out", out)
    assert_one_line_error(code, err, "already holds results")
    assert (out / "summary.json").read_text() == "[1]"


def test_compare_end_to_end_on_tiny_model(tiny_dir, data_file, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "ft", "--model", tiny_dir, "--data", data_file, "--schedule", "every:2", "--out", out, "--no-progress"]
    code, stdout, err = editkit(*args, "--report")
    assert code == 0, err
    assert "| none" in stdout and "| ft" in stdout and "tf rel" in stdout and "gen loc" in stdout
    assert f"report: {out / 'report'}" in stdout
    for name in ("table.md", "table.csv", "table.tex", "bars.png", "forgetting-tf.svg", "cost.png", "report.md"):
        assert (out / "report" / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["method"], r["step"]) for r in summary} == {(m, s) for m in ("none", "ft") for s in (2, 4)}
    for method in ("none", "ft"):
        for name in ("config.json", "results.jsonl", "edits.jsonl", "summary.json", "state"):
            assert (out / method / name).exists()
    # the same command twice gives the same numbers
    code, _, err = editkit(*args[:-3], "--out", tmp_path / "cmp2", "--no-progress")
    assert code == 0, err
    again = json.loads((tmp_path / "cmp2" / "summary.json").read_text())
    assert [(r["method"], r["metric"], r["scorer"], r["step"], r["mean"]) for r in summary] == [
        (r["method"], r["metric"], r["scorer"], r["step"], r["mean"]) for r in again
    ]
    code, table, err = editkit("report", out, "--format", "csv", "--no-plots", "--out", tmp_path / "csv-report")
    assert code == 0 and table.startswith("method,reliability,generalization,locality,mean,best")


def test_methods_lists_builtins():
    code, stdout, _ = editkit("methods")
    assert code == 0
    names = [line.split()[0] for line in stdout.splitlines()]
    assert {"none", "ft", "ft-l", "ft-m"} <= set(names)


def test_usage_error_is_one_line(tmp_path):
    code, _, err = editkit("compare", "--num-edits", "many", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "--num-edits", "'many' is not a valid integer")
    assert not (tmp_path / "o").exists()


def test_a_fallback_to_the_full_forward_is_counted_in_the_summary(tiny_dir, data_file, tmp_path):
    """MEMOIR with ``fast_edit=False`` runs every edit on the full forward: each edit says ``loop: full``,
    stderr says how many, and summary.json counts them up to each scored step (0 for the unedited row)."""
    out = tmp_path / "full"
    code, _, err = editkit(
        "compare", "--methods", "memoir", "--set", "memoir.fast_edit=false", "--set", "memoir.n_iter=2", "--model", tiny_dir,
        "--data", data_file, "--schedule", "every:2", "--scorers", "tf", "--out", out, "--no-progress", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "memoir: 4 of 4 edits ran the full forward" in err
    edits = [json.loads(line) for line in (out / "memoir" / "edits.jsonl").read_text().splitlines()]
    assert [e["loop"] for e in edits] == ["full"] * 4
    counts = {(r["method"], r["step"]): r["full_loop_edits"] for r in json.loads((out / "summary.json").read_text())}
    assert counts == {("none", 2): 0, ("none", 4): 0, ("memoir", 2): 2, ("memoir", 4): 4}
