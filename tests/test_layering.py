"""The dependency rules of docs/design.md ("Layers"), checked on the source: the core imports neither a
method nor an adapter, methods are found lazily through entry points, and no code outside a method's folder
names a method."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from editkit.registry import available_editors, baseline_names, default_comparison

ROOT = Path(__file__).resolve().parents[1]
SHARED = [ROOT / "editkit", ROOT / "evaluation", ROOT / "reports"]


def _imports(python: str) -> set[str]:
    code = f"import sys; {python}; print(' '.join(sorted(m for m in sys.modules if m.startswith('editkit'))))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_the_contract_and_the_registry_import_no_method_and_no_adapter():
    loaded = _imports("import editkit.editor, editkit.registry")
    assert not {m for m in loaded if m.startswith("editkit.methods")}, loaded
    assert "editkit.easyedit" not in loaded
    # not even for type checking: the contract module never mentions the adapter in an import
    tree = ast.parse((ROOT / "editkit" / "editor.py").read_text())
    modules = {getattr(node, "module", None) or "" for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any("easyedit" in m or "methods" in m for m in modules), modules


def test_a_method_is_imported_only_when_asked_for():
    loaded = _imports("from editkit.registry import get_editor_spec; get_editor_spec('none')")
    assert not {m for m in loaded if m.startswith("editkit.methods.")}, loaded


def test_the_default_comparison_and_the_baseline_are_declared_by_the_methods():
    assert baseline_names() == ["none"]
    assert default_comparison() == ["memoir", "ft"]  # what `editkit compare` runs with no --methods
    assert all(available_editors()[name].source == "built-in" for name in default_comparison())


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants and names in ``path``'s code (docstrings left out: prose may cite a method)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            found.append((node.lineno, node.attr))
    return found


def test_no_code_outside_the_method_folders_names_a_method():
    methods = sorted(name for name, spec in available_editors().items() if spec.editor_class.__module__.startswith("editkit.methods."))
    assert {"memoir", "ft"} <= set(methods)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(m) for m in methods) + r")(?![\w-])", re.IGNORECASE)
    hits = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for folder in SHARED
        for path in sorted(folder.rglob("*.py"))
        for line, text in _code_strings(path)
        if pattern.search(text)
    ]
    assert not hits, "\n".join(hits)
