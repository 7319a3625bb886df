"""benchmarks/gpu_check_summary.py, the table gpu_check.sh ends with: it must flag a NaN loss, a full loop and
a failed run (the GPU check itself needs a GPU; its summary is checked here on hand-made run directories)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check_summary", ROOT / "benchmarks" / "gpu_check_summary.py")
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)


def _run(directory: Path, loss: float, loop: str, peak: float | None) -> Path:
    (directory / "memoir").mkdir(parents=True)
    rows = [{"method": "memoir", "scorer": "tf", "metric": "reliability", "mean": 0.5}]
    (directory / "summary.json").write_text(json.dumps(rows))
    edits = [{"loss": loss, "seconds": 0.2, "loop": loop}, {"loss": 1.0, "seconds": 0.4, "loop": loop}]
    (directory / "memoir" / "edits.jsonl").write_text("".join(json.dumps(e) + "\n" for e in edits))
    timing = {"peak_rss_mb": 900.0, "peak_device_mb": peak}
    (directory / "memoir" / "timings.jsonl").write_text(json.dumps(timing) + "\n")
    return directory


def test_a_sound_run(tmp_path):
    lines, ok, scores = summary.summarize(_run(tmp_path / "a", 2.0, "packed", 1234.0))
    assert ok and scores == {("memoir", "tf", "reliability"): 0.5}
    assert "| memoir | 2 | 0.300 | packed×2 | yes | 900 | 1234 |" in lines[0]


def test_nan_loss_full_loop_and_missing_runs_are_flagged(tmp_path):
    assert not summary.summarize(_run(tmp_path / "nan", float("nan"), "packed", None))[1]
    assert not summary.summarize(_run(tmp_path / "full", 1.0, "full", None))[1]
    assert not summary.summarize(tmp_path / "missing")[1]
    assert summary.main([str(tmp_path / "nan")]) == 1


def test_gpu_check_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0
