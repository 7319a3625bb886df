"""A run directory in use by a live run is locked: a second run into it (or into a directory inside it) is
refused with one line naming the PID; the lock of a run killed with SIGKILL is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from editkit.cli import main
from editkit.evaluation.store import LOCK

# The real command line, with the harness made to wait forever once the run directory is prepared (and
# locked): a live run that stays live for as long as the test needs it.
HOLDER = """
import sys, time
import editkit.evaluation.harness as harness
def wait(*args, **kwargs):
    print("running", flush=True)
    time.sleep(600)
harness.Harness.run = wait
from editkit.cli import main
main(sys.argv[1:])
"""


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "edits.jsonl"
    rows = [{"id": f"r{i}", "prompt": f"Item {i} is", "target": f"thing {i}"} for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def editkit_run(out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return ["run", "none", "--model", str(model), "--data", str(data), "--out", str(out), "--no-progress", *extra]


def test_a_live_run_locks_its_directory(capsys, tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *editkit_run(out, tiny_model_dir, data_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "running", holder.stderr.read()
        assert (out / LOCK).read_text().strip() == str(holder.pid)
        for target, extra in ((out, ["--overwrite"]), (out / "inner", [])):
            with pytest.raises(SystemExit) as info:
                main(editkit_run(target, tiny_model_dir, data_file, *extra))
            lines = capsys.readouterr().err.strip().splitlines()
            assert info.value.code == 2 and len(lines) == 1, lines
            assert f"--out {target}: in use by a running editkit" in lines[0] and f"pid {holder.pid}" in lines[0]
        assert not (out / "inner").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed run's lock file is still there, holding a dead PID: the next run takes it over
    assert (out / LOCK).read_text().strip() == str(holder.pid)
    main(editkit_run(out, tiny_model_dir, data_file))
    assert (out / "summary.json").is_file()
    assert not (out / LOCK).exists(), "a finished run leaves no lock file behind"


def test_a_directory_holding_a_live_run_is_refused_from_above(capsys, tmp_path, tiny_model_dir, data_file):
    """A compare into a directory whose sub-directory a live run is writing would overwrite that run."""
    inner = tmp_path / "outer" / "inner"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *editkit_run(inner, tiny_model_dir, data_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "running"
        with pytest.raises(SystemExit):
            main(editkit_run(tmp_path / "outer", tiny_model_dir, data_file))
        line = capsys.readouterr().err.strip()
        assert f"in use by a running editkit (its directory {inner}), pid {holder.pid}" in line
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
