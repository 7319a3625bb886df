"""Property: a four-method comparison killed with SIGKILL at a random point, then resumed, ends with exactly
the files of the uninterrupted comparison (results, summaries, routing scores, final editor states).

The kill points are drawn from seeds that are printed (and put in every assertion message), so a failure
is replayed with ``EDITKIT_KILL_SEEDS=<seed>,... pytest tests/test_kill_anywhere.py``. A point is one of the
run's writes (a row, an atomic rename, an editor state file), killed before it, after it, or half-way
through it (a torn row); the kill is a real SIGKILL of a forked child that runs the real command line.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from conftest import request_rows

import editkit.editor
from editkit.cli import main
from editkit.evaluation import store

TRIALS = 20
METHODS = "memoir,ft,grace,wise"
COMPARED = ("summary.json", "results.jsonl", "routing.jsonl")


def _argv(out: Path, model: Path, data: Path) -> list[str]:
    return ["compare", "--methods", METHODS, "--model", str(model), "--data", str(data), "--schedule", "every:2",
            "--checkpoint-every", "1", "--no-progress", "--threads", "1", "--out", str(out)]  # fmt: skip


def _hooks(on_event: Callable[[str, Callable[[], None]], None]) -> list[tuple[object, str, object]]:
    """Patches that report every write of a run to ``on_event(kind, half)`` before doing it; ``half()``
    writes half of a row's bytes (for a torn row)."""
    row_write, replace, save_file = store._RowFile.write, os.replace, editkit.editor.save_file

    def write(self, rows, sync=False):
        rows = list(rows)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()

        def half() -> None:
            self.handle.write(text[: len(text) // 2])
            self.handle.flush()

        on_event("row", half)
        row_write(self, rows, sync)
        on_event("row-done", lambda: None)

    def rename(src, dst, *args, **kwargs):
        on_event("replace", lambda: None)
        replace(src, dst, *args, **kwargs)
        on_event("replace-done", lambda: None)

    def save(tensors, filename, *args, **kwargs):
        on_event("state", lambda: None)
        save_file(tensors, filename, *args, **kwargs)

    return [(store._RowFile, "write", write), (os, "replace", rename), (editkit.editor, "save_file", save)]


def _count_events(argv: list[str]) -> int:
    events: list[str] = []
    patches = _hooks(lambda kind, half: events.append(kind))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        main(argv)
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
    return len(events)


def _in_child(work: Callable[[], None], on_event: Callable[[str, Callable[[], None]], None] | None = None) -> int:
    """Run ``work`` in a forked child (with the write hooks reporting to ``on_event``); its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if on_event is not None:
                for owner, name, value in _hooks(on_event):
                    setattr(owner, name, value)
            work()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def _kill_at(event: int, torn: bool) -> Callable[[str, Callable[[], None]], None]:
    seen = [0]

    def on_event(kind: str, half: Callable[[], None]) -> None:
        seen[0] += 1
        if seen[0] == event:
            if torn:
                half()
            os.kill(os.getpid(), signal.SIGKILL)

    return on_event


def zygote(spec: dict) -> None:
    """The trials, in a process of their own (started by the test): the uninterrupted run, then per seed a
    forked child killed at the drawn write and a forked child that resumes it; what happened goes to
    ``spec["report"]`` as JSON."""
    model, data, root = spec["model"], spec["data"], Path(spec["root"])
    total = _count_events(_argv(root / "whole", model, data))
    trials = []
    for seed in spec["seeds"]:
        rng = random.Random(seed)
        event, torn = rng.randint(1, total), rng.random() < 0.5
        out = root / f"killed-{seed}"
        argv = _argv(out, model, data)
        killed = _in_child(lambda: main(argv), _kill_at(event, torn))
        if (out / "invocation.json").is_file():
            again = ["compare", "--resume", str(out)]
        else:  # killed before the run was recorded: nothing to resume, the same command starts it again
            again = [*argv, *(["--overwrite"] if out.exists() else [])]
        resumed = _in_child(lambda: main(again))
        trials.append({"seed": seed, "event": event, "total": total, "torn": torn, "killed": killed, "resumed": resumed})
    Path(spec["report"]).write_text(json.dumps(trials))


ZYGOTE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import test_kill_anywhere
test_kill_anywhere.zygote(json.loads(sys.argv[2]))
"""


def _seeds() -> list[int]:
    given = os.environ.get("EDITKIT_KILL_SEEDS")
    if given:
        return [int(s) for s in given.split(",")]
    base = random.SystemRandom().randrange(10**6)
    return [base + i for i in range(TRIALS)]


def test_killed_anywhere_and_resumed_is_byte_identical(tmp_path, tiny_model_dir):
    data = tmp_path / "edits.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in request_rows(4)))
    seeds = _seeds()
    print(f"kill seeds: {','.join(map(str, seeds))} (replay: EDITKIT_KILL_SEEDS=<seeds> pytest {__file__})")
    spec = {"model": str(tiny_model_dir), "data": str(data), "root": str(tmp_path), "seeds": seeds, "report": str(tmp_path / "trials.json")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.run([sys.executable, "-c", ZYGOTE, str(Path(__file__).parent), json.dumps(spec)], env=env, capture_output=True, text=True)
    assert process.returncode == 0, f"seeds {seeds}: {process.stderr[-3000:]}"
    whole = tmp_path / "whole"
    expected = {
        str(p.relative_to(whole)): p.read_bytes()
        for p in sorted(whole.rglob("*"))
        if p.is_file() and (p.name in COMPARED or p.parent.name == "state")
    }
    assert any(name.endswith("state/state.safetensors") for name in expected)
    for trial in json.loads((tmp_path / "trials.json").read_text()):
        where = f"seed {trial['seed']}: killed at write {trial['event']} of {trial['total']}{' (torn)' if trial['torn'] else ''}"
        status = trial["killed"]
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, where
        assert os.WIFEXITED(trial["resumed"]) and os.WEXITSTATUS(trial["resumed"]) == 0, f"{where}: the resume failed"
        out = tmp_path / f"killed-{trial['seed']}"
        got = {name: (out / name).read_bytes() if (out / name).is_file() else None for name in expected}
        differ = sorted(name for name in expected if got[name] != expected[name])
        assert not differ, f"{where}: differs from the uninterrupted run in {differ}"
        extra = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name in COMPARED and str(p.relative_to(out)) not in expected)
        assert not extra, f"{where}: files the uninterrupted run does not have: {extra}"
