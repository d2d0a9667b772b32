"""The api package is pure: it imports no I/O module and opens no file.

Protocol and policy code must run anywhere (cloud, edge, tests) without
side effects, so the allowed imports are listed here, not the forbidden ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "src" / "edgefleet" / "api"
ALLOWED = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "collections.abc",
    "copy",
    "dataclasses",
    "datetime",
    "enum",
    "hashlib",
    "ipaddress",
    "json",
    "re",
    "types",
    "typing",
    "urllib.parse",
    "pydantic",
    "pydantic.alias_generators",
    "pydantic.fields",
    "pydantic_core",
}
SOURCES = sorted(API.glob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_imports_are_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    foreign = {
        name
        for name in _imports(tree)
        if name not in ALLOWED and not name.startswith("edgefleet.api")
    }
    assert foreign == set()


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_no_builtin_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert calls.isdisjoint({"open", "print", "input", "exec", "eval", "__import__"})
