"""The main job as a user runs it: `editkit compare` on the embedded default model and the bundled stream."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_compare_on_the_default_model(default_model_cache, tmp_path):
    out = tmp_path / "cmp"
    env = {**os.environ, "EDITKIT_CACHE": str(default_model_cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "editkit.cli", "compare", "--methods", "ft", "--num-edits", "6", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| none" in proc.stdout and "| ft" in proc.stdout
    rows = {(r["method"], r["scorer"], r["metric"]): r["mean"] for r in json.loads((out / "summary.json").read_text())}
    for scorer in ("tf", "gen"):
        # the unedited model scored against its own cached predictions: exactly 1, not 0.9999
        assert rows[("none", scorer, "locality")] == 1.0
    # the model does not already know the new targets, and fine-tuning writes them
    assert rows[("none", "tf", "reliability")] < 0.6
    assert rows[("ft", "tf", "reliability")] > rows[("none", "tf", "reliability")] + 0.2
    config = json.loads((out / "ft" / "config.json").read_text())
    assert config["model"]["weights_sha256"] and config["dataset"]["name"] == "default"
    assert (out / "ft" / "state" / "state.safetensors").is_file()
