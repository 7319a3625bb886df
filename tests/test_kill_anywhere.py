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


def _count_events(monkeypatch, argv: list[str]) -> int:
    events = []
    with monkeypatch.context() as patch:
        for owner, name, value in _hooks(lambda kind, half: events.append(kind)):
            patch.setattr(owner, name, value)
        main(argv)
    return len(events)


def _killed_at(argv: list[str], event: int, torn: bool) -> int:
    """Run ``argv`` in a forked child killed by SIGKILL at its ``event``-th write; return the wait status."""
    pid = os.fork()
    if pid == 0:  # the child: the real command line, killed at the chosen write
        try:
            seen = [0]

            def on_event(kind: str, half: Callable[[], None]) -> None:
                seen[0] += 1
                if seen[0] == event:
                    if torn:
                        half()
                    os.kill(os.getpid(), signal.SIGKILL)

            for owner, name, value in _hooks(on_event):
                setattr(owner, name, value)
            main(argv)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def _seeds() -> list[int]:
    given = os.environ.get("EDITKIT_KILL_SEEDS")
    if given:
        return [int(s) for s in given.split(",")]
    base = random.SystemRandom().randrange(10**6)
    return [base + i for i in range(TRIALS)]


def test_killed_anywhere_and_resumed_is_byte_identical(tmp_path, tiny_model_dir, monkeypatch, capsys):
    data = tmp_path / "edits.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in request_rows(4)))
    whole = tmp_path / "whole"
    total = _count_events(monkeypatch, _argv(whole, tiny_model_dir, data))
    expected = {
        str(p.relative_to(whole)): p.read_bytes()
        for p in sorted(whole.rglob("*"))
        if p.is_file() and (p.name in COMPARED or p.parent.name == "state")
    }
    assert any(name.endswith("state/state.safetensors") for name in expected)
    seeds = _seeds()
    print(f"kill seeds: {','.join(map(str, seeds))} (replay: EDITKIT_KILL_SEEDS=...)")
    for seed in seeds:
        rng = random.Random(seed)
        event, torn = rng.randint(1, total), rng.random() < 0.5
        where = f"seed {seed}: killed at write {event} of {total}{' (torn)' if torn else ''}"
        out = tmp_path / f"killed-{seed}"
        status = _killed_at(_argv(out, tiny_model_dir, data), event, torn)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, where
        if (out / "invocation.json").is_file():
            main(["compare", "--resume", str(out)])
        else:  # killed before the run was recorded: nothing to resume, the same command starts it again
            main([*_argv(out, tiny_model_dir, data), *(["--overwrite"] if out.exists() else [])])
        capsys.readouterr()
        got = {name: (out / name).read_bytes() if (out / name).is_file() else None for name in expected}
        differ = sorted(name for name in expected if got[name] != expected[name])
        assert not differ, f"{where}: differs from the uninterrupted run in {differ}"
        extra = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name in COMPARED and str(p.relative_to(out)) not in expected)
        assert not extra, f"{where}: files the uninterrupted run does not have: {extra}"
