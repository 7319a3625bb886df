"""Seconds per edit of memory editors on tiny architectures: editkit at a reference revision ("before")
against this checkout ("after"), in one benchmark run, on the same saved models and the same requests.

    python benchmarks/architecture_edit_speed.py [--archs gpt2,gemma2] [--methods memoir,wise]
                                                 [--num-edits 3] [--before d6dd48d] [--threads 1]
                                                 [--work /tmp/editkit-arch-speed]

"before" is the whole of editkit at git revision ``--before`` (its methods, split forward and harness),
checked out with ``git worktree`` into ``--work`` and installed into a virtual environment of its own there
(torch 2.13.0 first, then ``pip install -e``: only the package registries are needed, and it is reused on a
second run). Each architecture is built by :mod:`editkit.architectures` with the default model's tokenizer
(a 49K vocabulary, like a real checkpoint) and saved once as a model directory, so both columns load the
very same weights; ``default`` is the default model itself. Both columns run the same command line, ``editkit
run METHOD --model DIR --data FILE --num-edits N --scorers tf --threads T``, one process per cell, the
columns alternating, and read ``edits.jsonl``: the median of each edit's ``seconds`` (editing only, not loading
or scoring) and the loop each edit recorded (``full``: the fast loop fell back to the full forward, which is
what made "before" slow on these families). The last column is the largest difference between the two
columns' final edit losses (0 where nothing an edit computes changed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def before_tree(revision: str, work: Path) -> Path:
    """The python of a virtual environment with editkit at ``revision`` installed (made once)."""
    tree = work / f"editkit-{revision}"
    python = tree / ".venv" / "bin" / "python"
    if python.is_file():
        return python
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "-e", str(tree)], check=True)
    return python


def save_models(archs: list[str], work: Path) -> dict[str, str]:
    """``{arch: model directory}`` (``default``: the embedded model, by its default name)."""
    built = [a for a in archs if a != "default"]
    if built:
        subprocess.run([sys.executable, "-m", "editkit.architectures", str(work / "models"), *built], check=True, capture_output=True)
    return {a: ("" if a == "default" else str(work / "models" / a)) for a in archs}


def write_requests(count: int, path: Path) -> None:
    """The first ``count`` requests of the bundled stream, as a JSON-lines file both revisions read."""
    from editkit.data import load_requests

    rows = [
        {"id": r.id, "prompt": r.prompt, "target": r.target, "rephrases": list(r.rephrases), "locality": [{"prompt": p, "answer": a} for p, a in r.locality]}
        for r in load_requests("default")[:count]
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def timed(python: Path, method: str, model: str, data: Path, args: argparse.Namespace, out: Path) -> tuple[str, str, list[float]]:
    """Median seconds per edit, the loops (as table cells; the error's last line where the run failed), and
    every edit's final loss."""
    command = [str(python), "-m", "editkit.cli", "run", method, "--data", str(data), "--num-edits", str(args.num_edits)]
    command += ["--scorers", "tf", "--threads", str(args.threads), "--no-progress", "--out", str(out), "--overwrite"]
    command += ["--model", model] if model else []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=out.parent, env=env)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return "error", (lines[-1] if lines else f"exit {proc.returncode}")[:160], []
    rows = [json.loads(line) for line in (out / "edits.jsonl").read_text().splitlines() if line.strip()]
    seconds = statistics.median(r["seconds"] for r in rows)
    return f"{seconds:.2f}", ",".join(str(r.get("loop", "-")) for r in rows), [float(r.get("loss", "nan")) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="gpt2,gemma2")
    parser.add_argument("--methods", default="memoir,wise")
    parser.add_argument("--num-edits", type=int, default=3)
    parser.add_argument("--before", default="d6dd48d", help="git revision of the 'before' column (the start of issue 16's round)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/editkit-arch-speed"))
    args = parser.parse_args()
    work = args.work.resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    before = before_tree(args.before, work)
    models = save_models(args.archs.split(","), work)
    data = work / "requests.jsonl"
    write_requests(args.num_edits, data)
    print(f"| model | method | before ({args.before}) s/edit | loops | after s/edit | loops | ratio | max loss diff |")
    print("|---|---|---|---|---|---|---|---|")
    for arch, model in models.items():
        for method in args.methods.split(","):
            t_before, l_before, loss_before = timed(before, method, model, data, args, work / "runs" / f"{arch}-{method}-before")
            t_after, l_after, loss_after = timed(Path(sys.executable), method, model, data, args, work / "runs" / f"{arch}-{method}-after")
            gap = max((abs(a - b) for a, b in zip(loss_after, loss_before)), default=float("nan"))
            numbers = "error" not in (t_before, t_after) and float(t_after) > 0
            ratio = f"{float(t_before) / float(t_after):.1f}x" if numbers else "-"
            print(f"| {arch} | {method} | {t_before} | {l_before} | {t_after} | {l_after} | {ratio} | {gap:.2e} |", flush=True)


if __name__ == "__main__":
    main()
