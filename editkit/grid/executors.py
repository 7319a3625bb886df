"""Where cells run: worker processes on this machine, or Ray tasks on a cluster.

Both take a task (the cell, the grid's ROOT and token, whether to resume, the group's reference predictions)
and hand back the worker's outcome; a worker that dies (SIGKILL, out of memory, a lost node) becomes a failed
outcome like any other, so the driver retries it the same way whichever executor ran it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from editkit.errors import EditkitError

from .cell import now


class Executor(Protocol):
    #: how many cells may run at once (None: as many as the cluster's resources allow)
    slots: int | None

    def submit(self, task: dict[str, Any]) -> None: ...

    def wait(self) -> list[dict[str, Any]]:
        """Block until at least one submitted cell ends; the outcomes of those that ended."""

    def close(self) -> None: ...


def _died(task: dict[str, Any], why: str, started: str) -> dict[str, Any]:
    return {"name": task["cell"]["name"], "ok": False, "error": why, "host": None, "pid": None, "start": started, "end": now(), "files": None}


@dataclass
class _Running:
    task: dict[str, Any]
    process: subprocess.Popen
    outcome_file: Path
    started: str


class LocalExecutor:
    """Each cell in a fresh ``python -m editkit.grid.worker`` process with its own thread count
    (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and torch's, from the cell's ``threads``); output goes to
    ``ROOT/logs/<cell>.log``."""

    def __init__(self, root: Path, max_parallel: int):
        self.root = root
        self.slots = max_parallel
        self.running: list[_Running] = []
        (root / "logs").mkdir(parents=True, exist_ok=True)
        (root / ".tasks").mkdir(parents=True, exist_ok=True)

    def submit(self, task: dict[str, Any]) -> None:
        name = task["cell"]["name"]
        task_file = self.root / ".tasks" / f"{name}.json"
        outcome_file = self.root / ".tasks" / f"{name}.outcome.json"
        outcome_file.unlink(missing_ok=True)
        task_file.write_text(json.dumps(task), encoding="utf-8")
        threads = str(task["cell"]["setup"].get("threads") or 1)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
        with open(self.root / "logs" / f"{name}.log", "a", encoding="utf-8") as log:
            log.write(f"--- {now()} try {task['try']}\n")
            log.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "editkit.grid.worker", str(task_file), str(outcome_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        self.running.append(_Running(task, process, outcome_file, now()))

    def wait(self) -> list[dict[str, Any]]:
        while True:
            ended = [r for r in self.running if r.process.poll() is not None]
            if ended:
                break
            time.sleep(0.1)
        outcomes = []
        for r in ended:
            self.running.remove(r)
            code = r.process.returncode
            if r.outcome_file.is_file():
                outcome = json.loads(r.outcome_file.read_text(encoding="utf-8"))
            elif code < 0:
                outcome = _died(r.task, f"worker killed by signal {-code}", r.started)
            else:
                outcome = _died(r.task, f"worker exited with code {code} before reporting", r.started)
            outcome.setdefault("pid", r.process.pid)
            outcomes.append(outcome)
        return outcomes

    def close(self) -> None:
        for r in self.running:  # only on an interrupted grid: the cells keep their checkpoints
            r.process.terminate()
        for r in self.running:
            r.process.wait()


class RayExecutor:
    """Each cell as one Ray task with the plan's resources (``num_cpus``, ``num_gpus``, ``memory``), on the
    cluster at ``address`` or on a local one started for the grid (and stopped after it). A Ray session
    already initialised by the caller is used as it is. Every task gets a fresh worker process
    (``max_calls=1``), and Ray's own retries are off: the driver counts and retries tries itself, so a
    crashed worker is retried the same way as a cell that raised."""

    def __init__(self, address: str | None, max_parallel: int | None, stage: bool = False):
        try:
            import ray
        except ImportError:
            raise EditkitError("--executor ray needs Ray: pip install 'editkit[grid]' (or pip install 'ray>=2.9')") from None
        from .cell import execute

        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # ConnectionError, a bad address, a cluster of another Ray version
                raise EditkitError(f"--executor ray: cannot start or reach a Ray cluster{f' at {address}' if address else ''}: {exc}") from None
            self.started = True
        self.slots = max_parallel
        self.stage = stage  # ship every cell's files back even where ROOT is visible (tests the other path)
        self.remote = ray.remote(max_retries=0, max_calls=1)(execute)
        self.pending: dict[Any, tuple[dict[str, Any], str]] = {}

    def submit(self, task: dict[str, Any]) -> None:
        resources = task["cell"].get("resources") or {}
        options = {"num_cpus": resources.get("num_cpus", 1), "num_gpus": resources.get("num_gpus", 0)}
        if resources.get("memory"):
            options["memory"] = resources["memory"]
        ref = self.remote.options(**options).remote({**task, "stage": self.stage})
        self.pending[ref] = (task, now())

    def wait(self) -> list[dict[str, Any]]:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        outcomes = []
        for ref in ready:
            task, started = self.pending.pop(ref)
            try:
                outcomes.append(self.ray.get(ref))
            except Exception as exc:  # WorkerCrashedError (SIGKILL), NodeDiedError, ...
                outcomes.append(_died(task, f"ray: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", started))
        return outcomes

    def close(self) -> None:
        for ref in list(self.pending):
            self.ray.cancel(ref, force=True)
        self.pending.clear()
        if self.started:
            self.ray.shutdown()
