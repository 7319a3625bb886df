"""``editkit grid`` on tiny-model cells: the local executor and a real local Ray cluster (2 CPUs, started once
for this module) give byte-identical results; a worker killed with SIGKILL mid-cell is resumed to the same
results; a failing cell is retried, then marked failed while the other cells finish; a finished plan runs no
cell again; a changed plan is refused unless it only adds cells (``--extend``)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import request_rows

from editkit.cli import main
from editkit.errors import EditkitError
from editkit.grid import expand, read_plan, run_grid
from editkit.grid.cell import CELLS

#: the files that must be identical byte for byte (config.json and edits.jsonl hold times and the command)
COMPARED = ("results.jsonl", "summary.json", "routing.jsonl", "state/state.safetensors")


def plan_text(model: Path, data: Path, seeds=(0, 1), extra_models=()) -> str:
    return yaml.safe_dump(
        {
            "models": [str(model), *map(str, extra_models)],
            "datasets": [{"data": str(data), "start": 0, "num_edits": 3}],
            "methods": ["ft"],
            # slow enough (about 0.5 s an edit) for a kill to land in the middle of a cell
            "set": {"ft": {"steps": 100, "early_stop_loss": 0}},
            "seeds": list(seeds),
            "schedule": "final",
            "scorers": ["tf"],
            "checkpoint_every": 1,
            "resources": {"num_cpus": 1, "num_gpus": 0},
        }
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dir) -> Path:
    path = tmp_path_factory.mktemp("grid")
    (path / "edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in request_rows(4)))
    (path / "plan.yaml").write_text(plan_text(tiny_model_dir, path / "edits.jsonl"))
    return path


@pytest.fixture(scope="module")
def local_root(workdir) -> Path:
    """The plan on the local executor: the reference every other run of it is compared with."""
    root = workdir / "local"
    result = run_grid(read_plan(workdir / "plan.yaml"), root, max_parallel=2, progress=False)
    assert not result.failed and len(result.ran) == 3
    return root


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def cell_files(root: Path) -> dict[str, bytes]:
    files = {}
    for cell in sorted((root / CELLS).iterdir()):
        for name in COMPARED:
            if (cell / name).is_file():
                files[f"{cell.name}/{name}"] = (cell / name).read_bytes()
    return files


def test_plan_names_cells_stably_and_shares_the_none_row(workdir):
    plan = read_plan(workdir / "plan.yaml")
    names = [c.name for c in plan.cells]
    assert names == ["tiny-model0__edits-0-3__none", "tiny-model0__edits-0-3__ft__seed0", "tiny-model0__edits-0-3__ft__seed1"]
    assert {c.group for c in plan.cells} == {names[0]}
    assert read_plan(workdir / "plan.yaml").hash == plan.hash
    with pytest.raises(EditkitError, match="unknown key 'method'"):
        expand({"models": ["default"], "method": ["ft"]})
    with pytest.raises(EditkitError, match="set: 'wise' is not one of the plan's methods"):
        expand({"models": ["default"], "methods": ["ft"], "set": {"wise": {"lr": 1}}})


def test_the_issue_plan_expands_as_written(tmp_path):
    (tmp_path / "path" / "to").mkdir(parents=True)
    (tmp_path / "path" / "to" / "counterfact.json").write_text("[]")
    plan = expand(
        yaml.safe_load(
            """
models: [default]
datasets:
  - {data: default, num_edits: 20}
  - {data: path/to/counterfact.json, start: 0, num_edits: 20}
methods: [memoir, ft, grace]
set: {memoir: {n_iter: 3}}
seeds: [0, 1]
schedule: final
scorers: [tf]
resources: {num_cpus: 1, num_gpus: 0}
"""
        ),
        tmp_path / "plan.yaml",
    )
    assert len(plan.cells) == 2 * (1 + 3 * 2)
    memoir = plan.cell("default__default-0-20__memoir__seed1")
    assert memoir.overrides == {"n_iter": 3} and memoir.setup["seed"] == 1 and memoir.setup["scorers"] == "tf"
    assert plan.cell("default__counterfact-0-20__none").setup["data"] == str(tmp_path / "path" / "to" / "counterfact.json")


def test_local_grid_records_every_cell_and_a_rerun_runs_none(workdir, local_root, capsys):
    record = json.loads((local_root / "grid.json").read_text())
    assert record["plan_hash"] == read_plan(workdir / "plan.yaml").hash
    for entry in record["cells"].values():
        assert entry["status"] == "done" and entry["tries"] == 1 and entry["device"] == "cpu" and entry["host"]
        assert entry["start"] <= entry["end"]
    # the method cells' locality is measured against the none cell's reference predictions: exactly 1 for none
    none = json.loads((local_root / CELLS / "tiny-model0__edits-0-3__none" / "summary.json").read_text())
    assert [r["mean"] for r in none if r["metric"] == "locality"] == [1.0]
    before = cell_files(local_root)
    main(["grid", str(workdir / "plan.yaml"), "--out", str(local_root), "--no-progress"])
    assert "(0 run now)" in capsys.readouterr().out
    assert cell_files(local_root) == before
    main(["grid", "--status", str(local_root)])
    table = capsys.readouterr().out
    assert "tiny-model0__edits-0-3__ft__seed1 | done" in table and "3 cells: 3 done" in table


def test_a_changed_plan_is_refused_unless_it_only_adds_cells(workdir, local_root, tiny_model_dir, capsys):
    changed = workdir / "changed.yaml"
    changed.write_text(plan_text(tiny_model_dir, workdir / "edits.jsonl").replace("steps: 100", "steps: 99"))
    with pytest.raises(SystemExit) as info:
        main(["grid", str(changed), "--out", str(local_root), "--no-progress", "--extend"])
    assert info.value.code == 2 and "changed" in capsys.readouterr().err
    grown = workdir / "grown.yaml"
    grown.write_text(plan_text(tiny_model_dir, workdir / "edits.jsonl", seeds=(0, 1, 2)))
    with pytest.raises(SystemExit) as info:
        main(["grid", str(grown), "--out", str(local_root), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "another plan" in err
    result = run_grid(read_plan(grown), local_root, extend=True, progress=False)
    assert result.ran == ["tiny-model0__edits-0-3__ft__seed2"]


def test_ray_grid_gives_the_local_results_byte_for_byte_even_without_a_shared_filesystem(workdir, local_root, ray_cluster):
    root = workdir / "ray-staged"
    # stage: every worker runs in its own temporary directory and ships the cell's files back
    result = run_grid(read_plan(workdir / "plan.yaml"), root, executor="ray", progress=False, stage=True)
    assert not result.failed and len(result.ran) == 3
    local = {k: v for k, v in cell_files(local_root).items() if "seed2" not in k}  # the extended cell
    assert cell_files(root) == local
    assert not (root / CELLS / "tiny-model0__edits-0-3__ft__seed0" / ".editkit.lock").exists()


def test_a_worker_killed_mid_cell_is_resumed_to_the_same_results(workdir, local_root, ray_cluster):
    root = workdir / "ray-killed"
    victim = root / CELLS / "tiny-model0__edits-0-3__ft__seed0"
    killed: list[int] = []

    def kill_when_checkpointed() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            try:
                checkpoint = json.loads((victim / "checkpoint.json").read_text())
                pid = int((victim / ".editkit.lock").read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            if 1 <= checkpoint["step"] and not checkpoint["complete"]:
                os.kill(pid, signal.SIGKILL)
                killed.append(checkpoint["step"])
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_when_checkpointed, daemon=True)
    watcher.start()
    result = run_grid(read_plan(workdir / "plan.yaml"), root, executor="ray", progress=False)
    watcher.join(timeout=1)
    assert killed, "the cell finished before it could be killed"
    assert not result.failed
    entry = result.record["cells"][victim.name]
    assert entry["tries"] == 2 and entry["status"] == "done"
    local = {k: v for k, v in cell_files(local_root).items() if "seed2" not in k}
    assert cell_files(root) == local


def test_a_failing_cell_is_retried_then_marked_failed_while_the_others_finish(workdir, tiny_model_dir, capsys):
    broken = workdir / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    plan = workdir / "with-broken.yaml"
    plan.write_text(plan_text(tiny_model_dir, workdir / "edits.jsonl", seeds=(0,), extra_models=(broken,)))
    root = workdir / "with-broken"
    with pytest.raises(SystemExit) as info:
        main(["grid", str(plan), "--out", str(root), "--retries", "1", "--max-parallel", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 1
    failed = ["broken-model__edits-0-3__none", "broken-model__edits-0-3__ft__seed0"]
    assert f"2 cells failed: {', '.join(failed)}" in err
    cells = json.loads((root / "grid.json").read_text())["cells"]
    assert cells[failed[0]]["tries"] == 2 and "broken-model" in cells[failed[0]]["error"]
    assert cells[failed[1]]["tries"] == 0 and "failed" in cells[failed[1]]["error"]
    assert cells["tiny-model0__edits-0-3__ft__seed0"]["status"] == "done"


def test_report_of_a_grid_root_has_one_table_per_group_with_spreads(local_root, capsys):
    main(["report", str(local_root), "--format", "csv"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("method,reliability,generalization,locality,mean,n,")
    assert "reliability_std" in lines[0]
    ft = next(line for line in lines if line.startswith("ft,"))
    assert " ± " in ft and ",3," in ft  # three seeds after the extension
    for name in ("table.md", "table.csv", "table.tex", "report.md"):
        assert (local_root / "report" / name).is_file()
    assert any(p.name.endswith("-cost.png") for p in (local_root / "report").iterdir())


def test_a_bad_plan_is_one_line_and_writes_nothing(workdir, tiny_model_dir, tmp_path, capsys):
    cases = {
        "unknown-method.yaml": plan_text(tiny_model_dir, workdir / "edits.jsonl").replace("- ft", "- nope"),
        "bad-value.yaml": plan_text(tiny_model_dir, workdir / "edits.jsonl").replace("steps: 100", "steps: many"),
        "too-many-edits.yaml": plan_text(tiny_model_dir, workdir / "edits.jsonl").replace("num_edits: 3", "num_edits: 30"),
        "not-yaml.yaml": "models: [",
    }
    for name, text in cases.items():
        plan = tmp_path / name
        plan.write_text(text)
        with pytest.raises(SystemExit) as info:
            main(["grid", str(plan), "--out", str(tmp_path / "root"), "--no-progress"])
        err = capsys.readouterr().err
        assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert str(plan) in err, err
        assert not (tmp_path / "root").exists(), name
    with pytest.raises(SystemExit) as info:
        main(["grid", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "root")])
    assert info.value.code == 2 and "absent.yaml: no such file" in capsys.readouterr().err
