"""``editkit report`` on synthetic results directories (no model), and routing.jsonl from the harness.

The directories are written with the harness's own RunWriter and summarize(), so they have exactly the
layout and the means a real run has; the expected numbers are recomputed here from the same rows.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

import matplotlib.image
import pytest

from editkit.cli import main
from editkit.errors import EditkitError
from editkit.evaluation.schedules import Schedule
from editkit.evaluation.scorers import METRICS, Score
from editkit.evaluation.store import RunWriter, summarize
from editkit.reports.report import build_report, write_report
from test_cli import assert_one_line_error
from test_protocol import make_harness, read_jsonl

STREAM = "ab12cd34" + "0" * 56
N = 6


def value(offset: float, step: int, index: int, metric: str, scorer: str) -> float:
    """A per-item score in [0, 1] that differs by method (offset), step, edit, metric and scorer."""
    raw = offset + 0.07 * index - 0.03 * step + (0.2 if scorer == "tf" else 0.0) + {"reliability": 0.3, "generalization": 0.1, "locality": 0.5}[metric]
    return round(min(1.0, max(0.0, raw)), 4)


def make_run(root: Path, method: str, offset: float = 0.0, schedule: str = "every:2", scorers=("tf", "gen"), routing=None, **context):
    """One method's run directory under ``root``; returns its summary rows."""
    ctx = {"method": method, "model": "tiny-model", "dataset": "toy_set", "stream": STREAM, "schedule": schedule, **context}
    writer = RunWriter(root / method, {"method": method}, ctx)
    scores = []
    for i in range(N):
        writer.edit(i + 1, f"e{i}", {"iterations": 1, "seconds": 0.0 if method == "none" else 0.5 + 0.1 * i + offset})
    for cp in Schedule.parse(schedule).plan(N):
        rows = [
            Score(cp.step, f"e{i}", metric, scorer, value(offset, cp.step, i, metric, scorer))
            for scorer in scorers
            for metric in METRICS
            for i in (cp.locality if metric == "locality" else cp.edits)
        ]
        writer.scores(rows)
        scores += rows
    if routing:
        writer.routing(routing)
    summary = summarize(scores, ctx, N, per_checkpoint=schedule != "immediate")
    writer.summary(summary)
    writer.close()
    return [asdict(r) for r in summary]


def make_compare(root: Path, methods: dict[str, float], routing: dict[str, list[dict]] | None = None, **kwargs) -> Path:
    """A compare directory: one run per method (with its offset and routing rows) and the combined summary.json."""
    root.mkdir(parents=True, exist_ok=True)
    combined = []
    for method, offset in methods.items():
        combined += make_run(root, method, offset, routing=(routing or {}).get(method), **kwargs)
    (root / "summary.json").write_text(json.dumps(combined))
    return root


def routing_rows(step: int, inside: list[float], outside: list[float], threshold: float) -> list[dict]:
    kinds = ["edit"] * (len(inside) // 2) + ["rephrase"] * (len(inside) - len(inside) // 2) + ["locality"] * len(outside)
    return [
        {"step": step, "edit_id": f"e{i}", "kind": kind, "score": s, "threshold": threshold, "score_name": "toy overlap"}
        for i, (kind, s) in enumerate(zip(kinds, inside + outside))
    ]


def final_means(summary_file: Path) -> dict[tuple[str, str, str], float]:
    rows = json.loads(summary_file.read_text())
    last = max(r["step"] for r in rows)
    return {(r["method"], r["scorer"], r["metric"]): r["mean"] for r in rows if r["step"] == last}


@pytest.fixture(autouse=True)
def few_edits_suffice(monkeypatch):
    """The synthetic runs have 6 edits, fewer than a real lead needs; their per-edit differences are
    constant, so the marks are exercised with the minimum lowered to those 6."""
    monkeypatch.setattr("editkit.evaluation.uncertainty.MIN_EDITS_FOR_SIGNIFICANCE", N)


@pytest.fixture()
def compare_dir(tmp_path):
    return make_compare(tmp_path / "cmp", {"none": -0.4, "alpha": 0.3, "beta": 0.1})


# ----------------------------------------------------------------------------------------------- tables
def test_table_values_match_summary(compare_dir):
    report = build_report([compare_dir])
    means = final_means(compare_dir / "summary.json")
    assert [t.caption.split("scorer ")[1].split(" ")[0] for t in report.tables] == ["tf", "gen"]
    for table in report.tables:
        scorer = table.rows[0].extra[0][1]
        assert [r.label for r in table.rows] == ["none", "alpha", "beta"]  # the unedited row first
        for row in table.rows:
            expected = [means[(row.label, scorer, m)] for m in METRICS]
            assert row.values[:3] == pytest.approx(expected)
            assert row.values[3] == pytest.approx(sum(expected) / 3)
    text = report.text("md")
    alpha = next(r for r in report.tables[0].rows if r.label == "alpha")
    assert f"**{alpha.values[0]:.3f}**" in text
    assert "model tiny-model, dataset toy_set, T = 6, stream ab12cd34, schedule every:2, chat template off, scorer tf" in text


def test_csv_and_latex_files(compare_dir):
    report = write_report(build_report([compare_dir]), compare_dir / "report", plots=False)
    means = final_means(compare_dir / "summary.json")
    out = compare_dir / "report"
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert len(rows) == 6 and {r["scorer"] for r in rows} == {"tf", "gen"}
    for row in rows:
        for metric in METRICS:
            assert float(row[metric]) == means[(row["method"], row["scorer"], metric)]  # full precision
        assert row["stream"] == STREAM and row["schedule"] == "every:2" and row["T"] == "6"
    alpha_tf = next(r for r in rows if (r["method"], r["scorer"]) == ("alpha", "tf"))
    assert alpha_tf["best"] == "reliability generalization locality mean"
    assert all(r["best"] == "" for r in rows if r["method"] in ("none", "beta"))
    tex = (out / "table.tex").read_text()
    for needle in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}{lrrrr}", "dataset toy\\_set", "\\caption{"):
        assert needle in tex
    assert f"\\textbf{{{float(alpha_tf['reliability']):.3f}}}" in tex
    assert (out / "table.md").read_text() == report.text("md")


def test_best_marks_ties_and_never_the_reference():
    from editkit.reports.tables import best_marks

    values = [(1.0, 0.2), (0.5, 0.4), (0.5, 0.4004), (0.1, None)]
    marks = best_marks(values, [False, True, True, True])
    assert marks == [frozenset(), frozenset({0, 1}), frozenset({0, 1}), frozenset()]  # 0.400 == 0.400 as printed
    assert best_marks([(0.3,), (0.9,)], [False, True]) == [frozenset(), frozenset()]  # one competitor: no mark


# ----------------------------------------------------------------------------------------------- merging
@pytest.mark.parametrize(
    "field, change",
    [("dataset", {"dataset": "other"}), ("stream", {"stream": "f" * 64}), ("schedule", {"schedule": "every:3"}),
     ("model", {"model": "big-model"}), ("scorers", {"scorers": ("tf",)})],
)
def test_mismatched_runs_are_refused_or_captioned(tmp_path, field, change):
    first = make_compare(tmp_path / "first", {"none": -0.4, "alpha": 0.3})
    second = make_compare(tmp_path / "second", {"none": -0.3, "beta": 0.1}, **change)
    with pytest.raises(EditkitError, match=f"{field} differs") as info:
        build_report([first, second])
    assert "first" in str(info.value) and "second" in str(info.value) and "--allow-mixed" in str(info.value)
    mixed = build_report([first, second], allow_mixed=True)
    labels = [r.label for r in mixed.tables[0].rows]
    assert labels == ["none (first)", "alpha (first)", "none (second)", "beta (second)"]  # each behind its reference
    assert all(not r.best for r in mixed.tables[0].rows) and "No best marked" in mixed.tables[0].note
    shown_field = "T" if field == "T" else field
    if field != "scorers":
        assert f"{shown_field} differs (" in mixed.tables[0].caption


def test_one_file_named_two_ways_is_one_dataset(tmp_path):
    """A run given ``../data/x.json`` and one given ``/abs/data/x.json`` measured the same stream: one table,
    no --allow-mixed. The same file name over other contents still differs, in the stream hash."""
    first = make_compare(tmp_path / "first", {"none": -0.4, "alpha": 0.3}, dataset="../shared/data/x.json")
    second = make_compare(tmp_path / "second", {"beta": 0.1}, dataset="/work/shared/data/x.json")
    merged = build_report([first, second])
    assert [r.label for r in merged.tables[0].rows] == ["none", "alpha", "beta"]
    assert "dataset x.json" in merged.tables[0].caption
    other = make_compare(tmp_path / "other", {"gamma": 0.1}, dataset="/elsewhere/x.json", stream="ff" * 32)
    with pytest.raises(EditkitError, match="stream differs"):
        build_report([first, other])


def test_same_method_in_two_directories(tmp_path):
    first = make_compare(tmp_path / "a", {"none": -0.4, "alpha": 0.3})
    same_none = make_compare(tmp_path / "b", {"none": -0.4, "beta": 0.1})
    merged = build_report([first, same_none])
    assert [r.label for r in merged.tables[0].rows] == ["none", "alpha", "beta"]  # identical rows shown once
    other_alpha = make_compare(tmp_path / "c", {"alpha": 0.2})
    with pytest.raises(EditkitError, match="method 'alpha' is in both .*a and .*c"):
        build_report([first, other_alpha])
    both = build_report([first, other_alpha], allow_mixed=True)
    assert [r.label for r in both.tables[0].rows] == ["none", "alpha (a)", "alpha (c)"]


def test_single_method_run_directory(tmp_path):
    summary = make_run(tmp_path, "alpha", 0.3)  # tmp_path/alpha is what `editkit run` writes
    report = build_report([tmp_path / "alpha"])
    assert [r.label for r in report.tables[0].rows] == ["alpha"]
    assert "Bold" not in report.tables[0].note and not report.tables[0].rows[0].best  # nothing to rank
    assert report.series[0].run.directory == tmp_path / "alpha"
    assert report.series[0].run.context.num_edits == max(r["step"] for r in summary)


# ----------------------------------------------------------------------------------------------- figures
def _decodes(path: Path) -> None:
    if path.suffix == ".png":
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    else:
        assert ET.parse(path).getroot().tag.endswith("svg")


def test_every_figure_is_written_and_decodes(tmp_path):
    routing = routing_rows(N, [0.9, 0.8, 0.7, 0.3], [0.5, 0.2, 0.1], 0.6)
    root = make_compare(tmp_path / "cmp", {"none": -0.4, "alpha": 0.3, "beta": 0.1}, routing={"alpha": routing})
    report = write_report(build_report([root]), root / "report")
    stems = ["bars", "forgetting-tf", "forgetting-gen", "position-tf", "position-gen", "cost", "routing-scores", "routing-roc"]
    for stem in stems:
        for ext in ("png", "svg"):
            path = root / "report" / f"{stem}.{ext}"
            assert path in report.files and path.stat().st_size > 0
            _decodes(path)
    index = (root / "report" / "report.md").read_text()
    assert all(f"({stem}.png)" in index for stem in stems)
    assert {p.name for p in report.files} >= {"table.md", "table.csv", "table.tex", "routing.md", "routing.csv", "routing.tex", "report.md"}
    assert report.notes == []


def test_final_schedule_gets_bars_and_a_note_instead_of_curves(tmp_path):
    root = make_compare(tmp_path / "final", {"none": -0.4, "alpha": 0.3}, schedule="final")
    report = write_report(build_report([root]), root / "report")
    names = {p.name for p in report.files}
    assert {"bars.png", "bars.svg", "cost.png", "position-tf.png"} <= names and not any(n.startswith("forgetting") for n in names)
    assert any(n.startswith("forgetting: needs an every:K run") for n in report.notes)
    assert any(n.startswith("routing:") for n in report.notes)



def test_a_second_report_into_the_same_directory_leaves_no_file_of_the_first(tmp_path):
    """Report A (every:2, routing) then report B (final, no routing) into one --out: A's forgetting curves and
    routing files would otherwise sit beside B's tables as if they were B's; files the report does not own stay."""
    routing = routing_rows(N, [0.9, 0.8, 0.7, 0.3], [0.5, 0.2, 0.1], 0.6)
    first = make_compare(tmp_path / "a", {"none": -0.4, "alpha": 0.3}, routing={"alpha": routing})
    second = make_compare(tmp_path / "b", {"none": -0.4, "beta": 0.1}, schedule="final")
    out = tmp_path / "out"
    write_report(build_report([first]), out)
    (out / "my-notes.md").write_text("mine")
    report = write_report(build_report([second]), out)
    left = {p.name for p in out.iterdir()}
    assert left == {p.name for p in report.files} | {"my-notes.md"}
    assert not any(n.startswith(("forgetting-", "routing")) for n in left)
    (note,) = [n for n in report.notes if n.startswith("removed")]
    assert "routing.md" in note and "forgetting-tf.png" in note

@pytest.mark.parametrize("bins, expected_positions", [(6, [1, 2, 3, 4, 5, 6]), (3, [1.5, 3.5, 5.5]), (4, [1.5, 3.5, 5.5])])
def test_score_by_edit_position_uses_the_last_checkpoint(compare_dir, bins, expected_positions):
    from editkit.reports.curves import position_curve

    run = build_report([compare_dir]).series[1].run
    points = position_curve(run, "tf", "reliability", bins)
    last = max(cp.step for cp in Schedule.parse("every:2").plan(N))
    per_edit = [value(0.3, last, i, "reliability", "tf") for i in range(N)]  # edit e{i} is at position i + 1
    size = N // len(expected_positions)
    assert [p for p, _ in points] == expected_positions
    assert [v for _, v in points] == pytest.approx([sum(per_edit[j : j + size]) / size for j in range(0, N, size)])


def test_retention_of_the_first_k_edits(compare_dir):
    from editkit.reports.curves import checkpoint_curve, retention_curve

    run = build_report([compare_dir]).series[1].run
    assert run.method == "alpha"
    first_k = range(2)  # every:2: the edits scored at the first checkpoint
    curve = retention_curve(run, "tf")
    assert [step for step, _ in curve] == [2, 4, 6]
    assert [v for _, v in curve] == pytest.approx([sum(value(0.3, step, i, "reliability", "tf") for i in first_k) / 2 for step in (2, 4, 6)])
    summary = json.loads((compare_dir / "alpha" / "summary.json").read_text())
    assert checkpoint_curve(run, "tf", "locality") == [
        (r["step"], r["mean"]) for r in summary if (r["scorer"], r["metric"]) == ("tf", "locality")
    ]


def test_split_by_edits_uses_the_last_checkpoint(compare_dir):
    from editkit.reports.curves import split_by_edits

    run = build_report([compare_dir]).series[1].run
    last = max(cp.step for cp in Schedule.parse("every:2").plan(N))
    per_edit = {f"e{i}": value(0.3, last, i, "generalization", "gen") for i in range(N)}
    (inside, n_in), (outside, n_out) = split_by_edits(run, "gen", "generalization", frozenset({"e1", "e4"}))
    assert (n_in, n_out) == (2, N - 2)
    assert inside == pytest.approx((per_edit["e1"] + per_edit["e4"]) / 2)
    assert outside == pytest.approx(sum(v for k, v in per_edit.items() if k not in {"e1", "e4"}) / (N - 2))
    (none_in, zero), _ = split_by_edits(run, "gen", "generalization", frozenset())
    assert zero == 0 and none_in != none_in  # an empty side is NaN, not 0


def test_routed_share_split_by_edits(tmp_path):
    from editkit.reports.curves import routed_by_edits

    # e0..e3 edit/rephrase rows; e4..e7 locality rows scoring .2 .6 .7 .1 against .5
    rows = routing_rows(N, [0.9, 0.8, 0.3, 0.7], [0.2, 0.6, 0.7, 0.1], threshold=0.5)
    root = make_compare(tmp_path / "cmp", {"alpha": 0.3}, routing={"alpha": rows})
    (run,) = [s.run for s in build_report([root]).series if s.run.method == "alpha"]
    (inside, n_in), (outside, n_out) = routed_by_edits(run, "locality", frozenset({"e5", "e7"}))
    assert (inside, n_in, outside, n_out) == (0.5, 2, 0.5, 2)
    (inside, n_in), (outside, n_out) = routed_by_edits(run, "locality", frozenset({"e5", "e6"}))
    assert (inside, n_in, outside, n_out) == (1.0, 2, 0.0, 2)
    assert routed_by_edits(run, "locality", frozenset(), step=N - 1) is None  # no routing rows at that step


def test_styles_are_fixed_per_method_and_the_reference_is_grey(tmp_path):
    from editkit.reports.style import BASELINE_COLOUR, OKABE_ITO, styles

    one = build_report([make_compare(tmp_path / "x", {"none": -0.4, "beta": 0.1, "alpha": 0.3})]).series
    other = build_report([make_compare(tmp_path / "y", {"alpha": 0.3, "none": -0.4, "beta": 0.1})]).series
    assert styles(one) == styles(other)
    assert styles(one)["none"].colour == BASELINE_COLOUR
    assert [styles(one)[m].colour for m in ("alpha", "beta")] == list(OKABE_ITO[:2])


# ----------------------------------------------------------------------------------------------- routing
def test_routing_auc_and_operating_point(tmp_path):
    from sklearn.metrics import roc_auc_score

    inside, outside = [0.9, 0.8, 0.4, 0.55], [0.5, 0.1, 0.6]
    early = routing_rows(2, [0.1] * 4, [0.9] * 3, 0.6)  # an earlier checkpoint: must not be read
    root = make_compare(tmp_path / "r", {"none": -0.4, "alpha": 0.3}, routing={"alpha": early + routing_rows(N, inside, outside, 0.6)})
    report = build_report([root])
    (stats,) = report.routing
    # pairs (in, out) ranked correctly: 0.9 and 0.8 beat all three, 0.55 beats 0.5 and 0.1, 0.4 beats 0.1
    assert stats.auc == pytest.approx(9 / 12) == pytest.approx(roc_auc_score([1] * 4 + [0] * 3, inside + outside))
    assert (stats.step, stats.threshold, stats.score_name) == (N, 0.6, "toy overlap")
    assert stats.tpr == pytest.approx(2 / 4) and stats.fpr == pytest.approx(1 / 3)
    assert stats.routed(("edit",)) == 1.0 and stats.routed(("rephrase",)) == 0.0
    row = report.routing_table.rows[0]
    assert row.label == "alpha" and row.values[2:5] == pytest.approx((0.75, 0.5, 1 / 3))
    assert row.values[-2:] == (4, 3)


def test_routing_needs_both_classes_for_an_auc(tmp_path):
    root = make_compare(tmp_path / "r", {"none": -0.4, "alpha": 0.3}, routing={"alpha": routing_rows(N, [0.9, 0.8], [], 0.5)})
    report = write_report(build_report([root]), root / "report")
    assert report.routing[0].auc is None and report.routing[0].fpr is None
    assert "routing ROC: no scores with both in-scope and locality prompts" in report.notes


def test_routing_under_immediate_reads_each_edit_right_after_it(tmp_path):
    rows = [row for step in (1, 2, 3) for row in routing_rows(step, [0.9, 0.55], [0.3], 0.4 + 0.1 * step)]
    root = make_compare(tmp_path / "imm", {"none": -0.4, "alpha": 0.3}, routing={"alpha": rows}, schedule="immediate")
    report = build_report([root])
    (stats,) = report.routing
    assert stats.pooled and stats.count(("edit", "rephrase")) == 6 and stats.count(("locality",)) == 3
    # each rephrase against its own checkpoint's threshold: 0.55 >= 0.5, < 0.6, < 0.7
    assert stats.routed(("rephrase",)) == pytest.approx(1 / 3) and stats.routed(("edit",)) == 1.0
    assert stats.threshold == pytest.approx(0.7)
    row = report.routing_table.rows[0]
    assert row.values[1] == "varies, last 0.7" and "right after each edit" in report.routing_table.caption


# ----------------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def editkit(capsys):
    """``editkit(*args)`` -> (exit code, stdout, stderr) of the command line, run in this process through
    the same ``main()`` as the console script (test_cli.py covers the real subprocess)."""

    def run(*args):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_cli_report_prints_and_writes(editkit, compare_dir, tmp_path):
    code, out, err = editkit("report", compare_dir, "--no-plots")
    assert code == 0, err
    assert out.startswith("**Reliability (Rel)") and "| alpha" in out
    assert f"report: {compare_dir / 'report'}" in err
    code, out, err = editkit("report", compare_dir, "--format", "csv", "--out", tmp_path / "elsewhere", "--no-plots")
    assert code == 0, err
    assert out.startswith("method,reliability,generalization,locality,mean,best,reliability_low,reliability_high")
    assert (tmp_path / "elsewhere" / "table.csv").read_text() == out


def test_cli_bad_input_is_one_line_and_exit_2(editkit, compare_dir, tmp_path):
    code, _, err = editkit("report", tmp_path / "absent")
    assert_one_line_error(code, err, "absent", "no such directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = editkit("report", empty)
    assert_one_line_error(code, err, "no summary.json")
    (empty / "summary.json").write_text('[{"method": "x",')
    code, _, err = editkit("report", empty)
    assert_one_line_error(code, err, "summary.json", "not valid JSON")
    (empty / "summary.json").write_text('[{"method": "x", "metric": "reliability"}]')
    code, _, err = editkit("report", empty)
    assert_one_line_error(code, err, "summary.json, row 1", "no field 'scorer'")
    with open(compare_dir / "alpha" / "results.jsonl", "a") as handle:
        handle.write('{"step": 6, "edit_id": "e0"\n')
    code, _, err = editkit("report", compare_dir)
    assert_one_line_error(code, err, "results.jsonl, line", "not valid JSON")
    assert not (compare_dir / "report").exists()  # checked before anything is written
    other = make_compare(tmp_path / "other", {"none": -0.4}, dataset="elsewhere")
    code, _, err = editkit("report", compare_dir, other, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "dataset differs", "--allow-mixed")
    code, _, err = editkit("report", compare_dir, other)
    assert_one_line_error(code, err, "--out")


# --------------------------------------------------------------------------------- the harness and MEMOIR
def test_harness_writes_routing_scores_for_memoir_only(tmp_path):
    from editkit.evaluation import compare
    from editkit.registry import get_editor_spec

    harness = make_harness("every:3")
    runs = [(get_editor_spec(n), get_editor_spec(n).make_config(**kw)) for n, kw in (("none", {}), ("memoir", {"n_iter": 3, "tau": 0.7}))]
    compare(harness, runs, tmp_path)
    assert not (tmp_path / "none" / "routing.jsonl").exists()  # an editor that does not route writes none
    rows = read_jsonl(tmp_path / "memoir" / "routing.jsonl")
    stream = harness.stream.requests
    for step in (3, 6):
        at = [r for r in rows if r["step"] == step]
        counts = {kind: sum(r["kind"] == kind for r in at) for kind in ("edit", "rephrase", "locality")}
        assert counts == {
            "edit": step,
            "rephrase": sum(len(r.rephrases) for r in stream[:step]),
            "locality": sum(len(r.locality) for r in stream),  # every:K scores the whole locality set each time
        }
    assert {(r["threshold"], r["score_name"], r["method"], r["stream"]) for r in rows} == {(0.7, "best mask overlap", "memoir", harness.stream.hash)}
    edits = [r for r in rows if r["kind"] == "edit" and r["step"] == 6]
    assert all(r["score"] >= 0.7 for r in edits)  # an edit's own prompt finds its own stored mask
    report = write_report(build_report([tmp_path]), tmp_path / "report")
    assert [st.series.method for st in report.routing] == ["memoir"]
    assert (tmp_path / "report" / "routing-scores.png").is_file()


# ------------------------------------------------------------------------------------ contested edits
def toy_stream_file(path: Path) -> Path:
    """Six editkit-format records e0..e5: e0 and e3 give subject Foo two targets (contested); e1's locality
    prompt names e2's subject Bar and asks the fact e2 rewrote (its ground_truth), e4's names e5's Baz."""
    def record(i, subject, target, locality, **meta):
        return {"id": f"e{i}", "prompt": f"Where does {subject} live?", "target": target, "subject": subject,
                "rephrases": [f"{subject} lives where?"], "locality": [{"prompt": locality[0], "answer": locality[1]}], "meta": meta}

    records = [
        record(0, "Foo", "Paris", ("Qux lives in", "Lima")),
        record(1, "Zed", "Rome", ("Bar lives in", "Oslo")),
        record(2, "Bar", "Kyiv", ("Quxley lives in", "Bonn"), ground_truth="Oslo"),
        record(3, "Foo", "Nice", ("Qux lives in", "Lima")),
        record(4, "Ann", "Bern", ("Baz lives in", "Riga")),
        record(5, "Baz", "Cork", ("Qux lives in", "Lima")),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_report_splits_scores_over_contested_edits_and_locality_in_reach(editkit, tmp_path):
    from editkit.data import load_requests
    from editkit.evaluation.streams import make_stream
    from editkit.reports.contested import stream_facts

    data = toy_stream_file(tmp_path / "toy.jsonl")
    stream = make_stream(load_requests(str(data)))
    facts = stream_facts(stream, str(data), 0)
    assert (facts.contested, facts.reach, facts.rewritten) == ({"e0", "e3"}, {"e1", "e4"}, {"e1"})
    assert stream_facts(stream, str(data), 0, stored=4).reach == {"e1"}  # Baz (e5) not edited by step 4
    on = [0.2, 0.6, 0.7, 0.1, 0.8, 0.3]  # locality prompts' scores against .5: e1, e2, e4 on
    routed = [{**row, "edit_id": f"e{i}"} for i, row in enumerate(routing_rows(N, [], on, 0.5))]
    root = make_compare(tmp_path / "cmp", {"alpha": 0.3}, stream=stream.hash, scorers=("tf",), routing={"alpha": routed})
    report = build_report([root], stream=f"{data}@0:6")
    (row,) = report.contested.rows
    tf = {i: {m: value(0.3, N, i, m, "tf") for m in METRICS} for i in range(N)}
    mean = lambda ids, m: sum(tf[i][m] for i in ids) / len(ids)  # noqa: E731
    assert row.label == "alpha" and row.values[:2] == ("tf (teacher-forced token accuracy)", N)
    assert row.values[2:8] == pytest.approx([
        mean([0, 3], "reliability"), mean([1, 2, 4, 5], "reliability"),
        mean([0, 3], "generalization"), mean([1, 2, 4, 5], "generalization"),
        mean([1, 4], "locality"), mean([0, 2, 3, 5], "locality"),
    ])
    assert row.values[8:] == pytest.approx([1.0, 0.25])  # in reach e1, e4 both on; of e0, e2, e3, e5 only e2
    written = write_report(report, tmp_path / "out", plots=False)
    assert (tmp_path / "out" / "contested.csv").is_file() and "2 contested and 2 with a locality prompt" in (tmp_path / "out" / "report.md").read_text()
    assert "rel contested" in written.text("md")
    # a slice other than the one the runs edited is refused before anything is written
    with pytest.raises(EditkitError, match="not on this one"):
        build_report([root], stream=f"{data}@0:5")
    code, _, err = editkit("report", root, "--stream", f"{data}@1:5", "--out", tmp_path / "never")
    assert_one_line_error(code, err, "--stream", "not on this one")
    assert not (tmp_path / "never").exists()
