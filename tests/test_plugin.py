"""A third-party editor, installed as its own package, is listed, run and conformance-tested by editkit
with no file of editkit changed: examples/editkit-example-editor declares the ``editkit.editors`` entry
point, and installing it is all it takes.

It is installed for real (pip, from a copy, so the build leaves nothing in the source tree) into a fresh
virtual environment layered over this one, so this test environment's registry never sees it.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "editkit-example-editor"
PLUGIN = "low-rank"


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a new venv that sees this environment's packages (editkit, torch) plus the plugin."""
    work = tmp_path_factory.mktemp("plugin")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # a .pth line runs at start-up: this environment's site-packages, with its own .pth files (editkit's
    # editable install among them), come after the venv's own
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages())
    (Path(target_site) / "parent-env.pth").write_text(lines)
    source = shutil.copytree(EXAMPLE, work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
               "--no-build-isolation", "--no-index", "--disable-pip-version-check", str(source)]  # fmt: skip
    proc = subprocess.run(install, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return python


def run(python: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd)


def test_listed_by_editkit_methods(plugin_python):
    proc = run(plugin_python, "-m", "editkit.cli", "methods")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.split()[0] == PLUGIN)
    assert "plugin editkit_example_editor:LowRankEditor" in line and "LowRankEditor(layer=None" in line


def test_runs_in_compare_and_makes_edits_stick(plugin_python, tiny_model_dir, tmp_path):
    data = tmp_path / "edits.jsonl"
    rows = [("Capital of Xo is", "Lum"), ("Zed plays the", "oboe"), ("Ken was born in", "Rio")]
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": p, "target": t}) + "\n" for i, (p, t) in enumerate(rows)))
    out = tmp_path / "cmp"
    proc = run(plugin_python, "-m", "editkit.cli", "compare", "--methods", PLUGIN, "--model", str(tiny_model_dir), "--data",
               str(data), "--scorers", "tf", "--threads", "1", "--no-progress", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"| {PLUGIN}" in proc.stdout
    reliability = {r["method"]: r["mean"] for r in json.loads((out / "summary.json").read_text()) if r["metric"] == "reliability"}
    assert reliability[PLUGIN] == 1.0 and reliability["none"] < 0.5, reliability
    assert (out / PLUGIN / "state" / "state.safetensors").is_file()


def test_passes_the_installed_conformance_suite_from_outside_the_checkout(plugin_python, tmp_path):
    # the suite as installed (editkit.testing), run from a directory that is not editkit's checkout, on the
    # plug-in's cases only: what its author runs in the plug-in's own repository
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    args = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "editkit.testing", "--editkit-editors", PLUGIN)
    proc = run(plugin_python, *args, cwd=outside)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout and "error" not in proc.stdout.lower(), proc.stdout[-3000:]
    collected = run(plugin_python, *args, "--collect-only", cwd=outside).stdout
    assert collected.count(f"[{PLUGIN}]") >= 10 and "[memoir" not in collected, collected[-2000:]


def test_a_plugin_that_fails_to_import_is_reported_and_does_not_stop_other_commands(plugin_python, tmp_path):
    """A broken third-party entry point: one line in ``editkit methods``; a run of another method works."""
    broken = tmp_path / "broken"
    (broken / "broken_editor").mkdir(parents=True)
    (broken / "broken_editor" / "__init__.py").write_text("raise ImportError('needs a library that is not installed')\n")
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "broken-editor"\nversion = "0.1.0"\n'
        '[project.entry-points."editkit.editors"]\nbroken = "broken_editor:Editor"\n'
        '[tool.setuptools]\npackages = ["broken_editor"]\n'
    )
    install = [sys.executable, "-m", "pip", "--python", str(plugin_python), "install", "--quiet", "--no-deps",
               "--no-build-isolation", "--no-index", "--disable-pip-version-check", str(broken)]  # fmt: skip
    assert subprocess.run(install, capture_output=True, text=True).returncode == 0
    try:
        listing = run(plugin_python, "-m", "editkit.cli", "methods")
        assert listing.returncode == 0, listing.stderr
        lines = [line for line in listing.stdout.splitlines() if line.split()[0] == "broken"]
        assert len(lines) == 1 and "failed to load" in lines[0] and "needs a library that is not installed" in lines[0]
        assert any(line.split()[0] == PLUGIN for line in listing.stdout.splitlines())
        used = run(plugin_python, "-m", "editkit.cli", "run", "broken", "--data", str(tmp_path / "none.jsonl"))
        assert used.returncode == 2 and "failed to load" in used.stderr and len(used.stderr.strip().splitlines()) == 1
    finally:
        uninstall = [sys.executable, "-m", "pip", "--python", str(plugin_python), "uninstall", "--quiet", "-y", "broken-editor"]
        subprocess.run(uninstall, capture_output=True, text=True)
