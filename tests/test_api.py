"""The Python API (editkit.api) and seeds: typed configs in, typed results out, the same run the CLI makes;
``load_run`` gives back the editor with its state; ``--seeds`` gives one run per seed and mean ± std."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import request_rows

from editkit import api
from editkit.cli import main
from editkit.evaluation.scorers import TeacherForcedScorer
from editkit.evaluation.streams import make_stream
from editkit.data import load_requests
from editkit.reports.seeds import spread


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("api") / "edits.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in request_rows(3)))
    return path


def setup_for(model: Path, data: Path, **changes) -> api.Setup:
    return api.Setup(data=str(data), model=str(model), scorers="tf", threads=1, progress=False, **changes)


def test_api_run_gives_the_cli_numbers_and_load_run_gives_back_the_editor(tmp_path, tiny_model_dir, data_file):
    result = api.run(api.RunConfig("grace", setup_for(tiny_model_dir, data_file), out=tmp_path / "api"))
    assert result.out == tmp_path / "api" and {r.method for r in result.rows} == {"grace"}
    assert "| grace" in result.table()
    main(["run", "grace", "--model", str(tiny_model_dir), "--data", str(data_file), "--scorers", "tf", "--threads", "1", "--no-progress", "--out", str(tmp_path / "cli")])
    assert (tmp_path / "api" / "results.jsonl").read_bytes() == (tmp_path / "cli" / "results.jsonl").read_bytes()
    # the API's run resumes through the CLI like any other run
    main(["run", "--resume", str(tmp_path / "api")])

    loaded = api.load_run(tmp_path / "api")
    assert loaded.step == 3 and loaded.config["method"] == "grace"
    stream = make_stream(load_requests(str(data_file)), None).requests
    scores = TeacherForcedScorer(loaded.loaded.tokenizer).target_scores(loaded.editor, [(r.prompt, r.target) for r in stream])
    reliability = next(r["mean"] for r in loaded.rows if r["metric"] == "reliability")
    assert sum(scores) / len(scores) == pytest.approx(reliability)


def test_api_compare_puts_none_first_and_load_run_needs_the_method(tmp_path, tiny_model_dir, data_file):
    config = api.CompareConfig(methods=("grace", api.MethodChoice("ft", {"steps": 2})), setup=setup_for(tiny_model_dir, data_file), out=tmp_path / "cmp")
    result = api.compare(config)
    assert list(dict.fromkeys(r.method for r in result.rows)) == ["none", "grace", "ft"]
    assert json.loads((tmp_path / "cmp" / "ft" / "config.json").read_text())["method_config"]["steps"] == 2
    with pytest.raises(api.EditkitError, match="pass method= one of ft, grace, none"):
        api.load_run(tmp_path / "cmp")
    assert api.load_run(tmp_path / "cmp", method="ft").step == 3


def test_seeds_run_once_per_seed_and_print_mean_and_std(tmp_path, tiny_model_dir, data_file, capsys):
    out = tmp_path / "seeds"
    args = ["compare", "--methods", "grace", "--model", str(tiny_model_dir), "--data", str(data_file), "--scorers", "tf", "--threads", "1", "--no-progress"]
    main([*args, "--seeds", "0,1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "mean ± std over seeds 0, 1" in printed and "| n" in printed
    for seed in (0, 1):
        config = json.loads((out / f"seed-{seed}" / "grace" / "config.json").read_text())
        assert config["seed"] == seed and config["method_config"]["seed"] == seed  # the method's own randomness too
    main(["compare", "--resume", str(out / "seed-1")])  # each seed's directory is a run of its own
    main(["report", str(out), "--no-plots"])
    table = capsys.readouterr().out
    assert "seeds 0, 1" in table and "| grace" in table
    with pytest.raises(SystemExit) as info:
        main([*args, "--seed", "3", "--seeds", "0,1", "--out", str(tmp_path / "both")])
    assert info.value.code == 2 and "--seed and --seeds" in capsys.readouterr().err
    assert not (tmp_path / "both").exists()


def test_the_run_seed_reaches_a_method_config_seed_unless_set():
    [(_, grace)], _ = api.method_configs([api.MethodChoice("grace")], seed=4)
    [(_, pinned)], _ = api.method_configs([api.MethodChoice("grace", {"seed": "7"})], seed=4)
    [(_, ft)], _ = api.method_configs([api.MethodChoice("ft")], seed=4)  # no seed field: nothing to set
    assert grace.seed == 4 and pinned.seed == 7 and not hasattr(ft, "seed")


def test_spread_is_the_sample_standard_deviation():
    assert spread([0.5]).std is None and str(spread([0.5])) == "0.500"
    two = spread([0.4, 0.6])
    assert two.mean == pytest.approx(0.5) and two.std == pytest.approx(0.1414213562) and two.n == 2
    assert str(two) == "0.500 ± 0.141"
