"""The layering rule (docs/architecture.md): a stage imports only earlier stages, and names no later stage's module by
string either, outside the front door's verb table (cpnet/cli's VERBS).

Imports: import-linter's layers contract in setup.cfg (``lint-imports`` from the repository root), run here.
Strings: an AST scan of every stage's string constants (docstrings aside: they may point a reader anywhere) for a
dotted module path of a later stage, or a later stage's name handed to ``import_module``/``find_spec``/``__import__``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("cpnet", "quantize", "engines", "demo", "pipeline")  # earliest first
#: the one place a stage may name later ones by string: the front door's verb -> module table
ALLOWED = {("cpnet/cli/__init__.py", "VERBS")}
_DOTTED = re.compile(r"^(?P<top>[A-Za-z_]\w*)(\.[A-Za-z_]\w*)+$")
_LOADERS = {"import_module", "find_spec", "__import__", "import_string"}


def _lint_imports(config: Path, cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter", reason="import-linter is in the [dev] extra: pip install -e '.[dev]'")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter's lint-imports command is not on PATH")
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_no_stage_imports_a_later_one():
    r = _lint_imports(ROOT / "setup.cfg", ROOT, ROOT)
    assert r.returncode == 0 and "1 kept, 0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_the_contract_breaks_on_an_upward_import(tmp_path):
    """The contract has teeth: a tree whose cpnet imports engines (even inside a function) breaks it."""
    for stage in STAGES:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "__init__.py").write_text("")
    (tmp_path / "cpnet" / "late.py").write_text("def f():\n    from engines import backends  # noqa\n")
    (tmp_path / "engines" / "backends.py").write_text("")
    r = _lint_imports(ROOT / "setup.cfg", tmp_path, tmp_path)
    assert r.returncode == 1 and "BROKEN" in r.stdout and "cpnet.late -> engines.backends" in r.stdout, r.stdout


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def _allowed(rel: str, tree: ast.AST) -> set[int]:
    """The string constants inside an allowed table (an assignment to one of ALLOWED's names in that file)."""
    ids = set()
    for node in ast.walk(tree):
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
                isinstance(t, ast.Name) and (rel, t.id) in ALLOWED for t in targets) and node.value is not None:
            ids |= {id(c) for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return ids


def later_stage_strings(root: Path) -> list[str]:
    """``file:line: 'string'`` for every string in a stage that names a later stage's module."""
    found = []
    for rank, stage in enumerate(STAGES):
        later = set(STAGES[rank + 1:])
        for path in sorted((root / stage).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
            skip = _docstrings(tree) | _allowed(rel, tree)
            loaded = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call)
                      and getattr(n.func, "attr", getattr(n.func, "id", None)) in _LOADERS for a in n.args}
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
                    continue
                m = _DOTTED.match(node.value)
                top = m.group("top") if m else node.value if id(node) in loaded else None
                if top in later:
                    found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found


def test_no_stage_names_a_later_ones_module_by_string():
    found = later_stage_strings(ROOT)
    assert not found, "a stage names a later stage's module by string (move the code, or the table, up):\n" + \
        "\n".join(found)


def test_the_scan_sees_a_string_registry_and_spares_the_verb_table(tmp_path):
    for stage in STAGES:
        (tmp_path / stage).mkdir()
    (tmp_path / "cpnet" / "cli").mkdir()
    (tmp_path / "cpnet" / "cli" / "__init__.py").write_text('VERBS = {"check": "engines.check"}\n')
    (tmp_path / "quantize" / "registry.py").write_text(
        '"""Docstrings may say engines.open."""\nimport importlib\nRUNNERS = {"trt": ("engines.trt", "Engine")}\n'
        'def load():\n    return importlib.import_module("demo")\nLOCAL = "quantize.qdq"\n')
    assert later_stage_strings(tmp_path) == ["quantize/registry.py:3: 'engines.trt'", "quantize/registry.py:5: 'demo'"]


def test_every_folder_of_a_stage_is_a_package_the_install_takes():
    """setup.cfg's ``packages = find:`` takes only folders with an __init__.py: one without would be missing from a
    non-editable install (a namespace package still imports from a checkout, so nothing else notices)."""
    setuptools = pytest.importorskip("setuptools")
    found = set(setuptools.find_packages(str(ROOT), include=[f"{s}*" for s in STAGES]))
    folders = {p.parent.relative_to(ROOT).as_posix().replace("/", ".") for s in STAGES for p in (ROOT / s).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert folders <= found, f"folders with code but no __init__.py: {sorted(folders - found)}"
