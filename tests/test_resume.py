"""A run killed with SIGKILL mid-stream and resumed with ``--resume`` ends with exactly the files of an
uninterrupted run: no lost and no duplicated rows, the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import request_rows

from editkit.cli import main

# The real command line, killed with SIGKILL right after the KILL_AFTER-th edit row is written, with half a
# results row left behind (as a kill in the middle of a write would).
KILLER = """
import os, signal, sys
from editkit.evaluation import store
original = store.RunWriter.edit
written = []
def edit(self, *args, **kwargs):
    original(self, *args, **kwargs)
    written.append(1)
    if len(written) == int(os.environ["KILL_AFTER"]):
        with open(self.directory / "results.jsonl", "a") as handle:
            handle.write('{"method": "torn')
        os.kill(os.getpid(), signal.SIGKILL)
store.RunWriter.edit = edit
from editkit.cli import main
main(sys.argv[1:])
"""
NUM_EDITS = 10


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "edits.jsonl"
    rows = request_rows(NUM_EDITS)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _compare(out: Path, model: Path, data: Path) -> list[str]:
    return [
        "compare", "--methods", "memoir,grace,ft", "--model", str(model), "--data", str(data), "--schedule", "every:3",
        "--checkpoint-every", "2", "--no-progress", "--threads", "1", "--out", str(out),
    ]  # fmt: skip


def _edit_rows(file: Path) -> list[dict]:
    """edits.jsonl without the timings (`seconds`, `lookup_seconds`), which no two runs share."""
    rows = [json.loads(line) for line in file.read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]


@pytest.mark.parametrize("kill_after, method, last_checkpoint", [(NUM_EDITS + 7, "memoir", 6), (2 * NUM_EDITS + 3, "grace", 2)])
def test_a_killed_run_resumes_to_the_files_of_an_uninterrupted_one(
    tmp_path, tiny_model_dir, data_file, kill_after, method, last_checkpoint, capsys
):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    main(_compare(whole, tiny_model_dir, data_file))

    env = {**os.environ, "KILL_AFTER": str(kill_after), "OMP_NUM_THREADS": "1"}
    process = subprocess.run(
        [sys.executable, "-c", KILLER, *_compare(killed, tiny_model_dir, data_file)], env=env, capture_output=True, text=True
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert not (killed / "summary.json").exists() or len(json.loads((killed / "summary.json").read_text())) < len(
        json.loads((whole / "summary.json").read_text())
    )

    # killed right after edit row last_checkpoint + 1 of that method (before its scoring): rows on disk, state not
    assert json.loads((killed / method / "checkpoint.json").read_text())["step"] == last_checkpoint
    assert len((killed / method / "edits.jsonl").read_text().splitlines()) == last_checkpoint + 1

    main(["compare", "--resume", str(killed)])
    assert (killed / "summary.json").read_bytes() == (whole / "summary.json").read_bytes()
    for method in ("none", "memoir", "grace", "ft"):
        for name in ("results.jsonl", "summary.json", "routing.jsonl"):
            if (whole / method / name).exists():
                assert (killed / method / name).read_bytes() == (whole / method / name).read_bytes(), f"{method}/{name}"
        assert _edit_rows(killed / method / "edits.jsonl") == _edit_rows(whole / method / "edits.jsonl"), method
        assert json.loads((killed / method / "checkpoint.json").read_text())["complete"] is True
        assert not (killed / method / "checkpoints").exists()


def test_resume_takes_no_other_options_and_needs_a_run(tmp_path, tiny_model_dir, data_file, capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--resume", str(tmp_path), "--num-edits", "3"])
    assert info.value.code == 2 and "takes no other options" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["compare", "--resume", str(tmp_path)])
    assert info.value.code == 2 and "invocation.json" in capsys.readouterr().err
    out = tmp_path / "done"
    main(["run", "none", "--model", str(tiny_model_dir), "--data", str(data_file), "--no-progress", "--out", str(out)])
    with pytest.raises(SystemExit) as info:
        main(["compare", "--resume", str(out)])
    assert info.value.code == 2 and "'editkit run'" in capsys.readouterr().err
    before = (out / "results.jsonl").read_bytes()
    main(["run", "--resume", str(out)])  # a finished run: nothing to do, nothing rewritten
    assert (out / "results.jsonl").read_bytes() == before


def test_resume_finds_relative_paths_from_another_directory(tmp_path, tiny_model_dir, monkeypatch):
    started = tmp_path / "started"
    started.mkdir()
    (started / "edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in request_rows(2)))
    monkeypatch.chdir(started)
    main(["run", "none", "--model", str(tiny_model_dir), "--data", "edits.jsonl", "--no-progress", "--out", "out"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    main(["run", "--resume", str(started / "out")])  # a finished run: loads and checks everything, writes nothing
    assert json.loads((started / "out" / "config.json").read_text())["dataset"]["name"] == "edits.jsonl"
