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


def refused_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1, lines
    return lines[0]


def test_a_live_run_locks_its_directory(capsys, tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "outer" / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *editkit_run(out, tiny_model_dir, data_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "running", holder.stderr.read()
        assert (out / LOCK).read_text().strip() == str(holder.pid)
        # the same directory (--overwrite would delete the live run's files), one inside it, one around it
        for target, extra in ((out, ["--overwrite"]), (out / "inner", []), (out.parent, [])):
            line = refused_line(capsys, editkit_run(target, tiny_model_dir, data_file, *extra))
            inside = "" if target == out else f" (its directory {out})"
            assert f"--out {target}: in use by a running editkit{inside}, pid {holder.pid}" in line
        assert not (out / "inner").exists() and sorted(p.name for p in out.parent.iterdir()) == ["busy"]
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # the killed run's lock file is still there, holding a dead PID: resuming it takes the lock over
    assert (out / LOCK).read_text().strip() == str(holder.pid)
    main(["run", "--resume", str(out)])
    assert (out / "summary.json").is_file()
    assert not (out / LOCK).exists(), "a finished run leaves no lock file behind"
