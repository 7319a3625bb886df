"""The built wheel holds every package of the source tree, every method folder included, with no list of
packages kept by hand (setup.py discovers them), and declares every method through entry points."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the package it installs as (setup.py's roots)
ROOTS = {"editkit": "editkit", "methods": "editkit/methods", "evaluation": "editkit/evaluation", "reports": "editkit/reports"}


def test_wheel_contains_every_package_and_entry_point(tmp_path):
    # built from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", "docs", "tests"))
    # a method folder added now, with no edit to pyproject.toml or setup.py, must be in the wheel too
    (source / "methods" / "brand_new" / "maths").mkdir(parents=True)
    (source / "methods" / "brand_new" / "__init__.py").write_text("")
    (source / "methods" / "brand_new" / "maths" / "__init__.py").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check",
         "--quiet", "-w", str(tmp_path / "dist"), str(source)],  # fmt: skip
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("editkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{package}/{init.parent.relative_to(ROOT / folder).as_posix()}/__init__.py".replace("/./", "/")
        for folder, package in ROOTS.items()
        for init in (ROOT / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    missing = sorted(e for e in expected if e not in names)
    assert not missing, missing
    assert {"editkit/methods/brand_new/__init__.py", "editkit/methods/brand_new/maths/__init__.py"} <= names
    methods = sorted(p.name for p in (ROOT / "methods").iterdir() if (p / "__init__.py").is_file())
    assert methods and all(f"editkit/methods/{m}/editor.py" in names or f"editkit/methods/{m}/__init__.py" in names for m in methods)
    assert "editkit/data/bundled/default.jsonl" in names and "editkit/testing/test_conformance.py" in names
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for method in methods:  # every method folder is declared as an editor
        assert f"editkit.methods.{method}:" in entry_points, method
    assert "[pytest11]" in entry_points and "editkit.testing.plugin" in entry_points
