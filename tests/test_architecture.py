"""The package's structure: no import cycles, and the layers declared in pyproject.toml."""

import ast
import logging
import os
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "streammask"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every in-package module ``path`` imports, at the top or inside functions, with the packages
    that importing it initialises (``a.b.c`` also runs ``a.b``); the module's own ancestors are left
    out (Python initialises them before the module itself)."""
    me = _module(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for target in targets:
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    ancestors = {".".join(me.split(".")[:i]) for i in range(1, me.count(".") + 1)}
    return {m for m in found if m in modules} - ancestors - {me}


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(p, set(files)) for m, p in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_inside_the_package():
    graph = _graph()
    assert len(graph) > 40  # the walk found the package's modules
    assert _cycles(graph) == []


def test_the_cycle_check_sees_function_local_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "streammask"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert _cycles(_graph()) == [["streammask.a", "streammask.sub.b"]]


def test_layer_contracts_hold():
    """pyproject.toml's import-linter contracts: io, model and ops know nothing of each other or of the faces;
    the pipeline knows no CLI, node or window; only cli/ imports cli."""
    importlinter_cli = pytest.importorskip("importlinter.cli", reason="import-linter is a test extra")
    root = PACKAGE.parent
    cwd = os.getcwd()
    # lint_imports configures logging with dictConfig, which disables every logger that exists (streammask's
    # included): later tests that read streammask's warnings with caplog would see nothing
    disabled = {name: lg.disabled for name, lg in logging.root.manager.loggerDict.items()
                if isinstance(lg, logging.Logger)}
    try:
        os.chdir(root)
        status = importlinter_cli.lint_imports(config_filename=str(root / "pyproject.toml"), no_cache=True,
                                               no_logo=True)
    finally:
        os.chdir(cwd)
        for name, was_disabled in disabled.items():
            logging.getLogger(name).disabled = was_disabled
    assert status == 0
