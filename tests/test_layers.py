"""The import contracts cover the whole package, and the pure modules also call no I/O builtins.

The layering itself (docs/architecture.md, "Layering") is checked by
import-linter (``lint-imports`` in ``scripts/test.sh``) with the contracts in
``pyproject.toml``. What import-linter cannot see is checked here: that no
top-level package escapes the layers contract (a new package would otherwise
be unconstrained), and that the modules the purity contract names do not
reach the file system or the terminal through builtins (``open``, ``print``)
that need no import.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "edgefleet"
IO_BUILTINS = {"open", "print", "input", "exec", "eval", "__import__"}
GENERATED_CODE = {"cache/front/logformat.py": "exec"}
"""Pure modules that compile code from their own fixed templates (as ``dataclasses`` does), and the call they may make.

The access log's line formatters are generated per format and field selection, so that a line is one
f-string and not a loop of calls over its fields (docs/cache.md, "Access log").
No config or client text reaches the template: field names come from a closed set."""


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return found


def contract(type_: str, name_starts: str) -> dict[str, Any]:
    return next(c for c in contracts() if c["type"] == type_ and c["name"].startswith(name_starts))


def top_level_modules() -> set[str]:
    packages = {path.parent.name for path in SRC.glob("*/__init__.py")}
    modules = {path.stem for path in SRC.glob("*.py") if path.stem not in {"__init__", "__main__"}}
    return {f"edgefleet.{name}" for name in packages | modules}


def layered_modules() -> set[str]:
    return {module.strip() for layer in contract("layers", "Layers")["layers"] for module in layer.split("|")}


def files_of(module: str) -> list[Path]:
    path = SRC.joinpath(*module.split(".")[1:])
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path.with_suffix(".py")]


def io_builtin_calls(path: Path, base: Path = SRC) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(base)}:{node.lineno} calls {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in IO_BUILTINS
        and GENERATED_CODE.get(str(path.relative_to(base))) != node.func.id
    ]


def test_every_top_level_package_is_placed_in_the_layers_contract() -> None:
    missing = top_level_modules() - layered_modules()
    assert not missing, f"add {sorted(missing)} to the layers contract in pyproject.toml"


def test_the_layers_contract_names_only_what_exists() -> None:
    assert layered_modules() <= top_level_modules()


PURE_SOURCES = contract("forbidden", "Pure modules do no I/O")["source_modules"]


@pytest.mark.parametrize("module", PURE_SOURCES)
def test_pure_modules_call_no_io_builtins(module: str) -> None:
    paths = files_of(module)
    assert paths and all(path.exists() for path in paths), f"{module} is named in the contract but missing"
    calls = [call for path in paths for call in io_builtin_calls(path)]
    assert not calls, "pure modules must do no I/O:\n" + "\n".join(calls)


def test_the_builtin_check_sees_a_call(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f() -> None:\n    print(open('x').read())\n")
    assert sorted(io_builtin_calls(bad, tmp_path)) == ["bad.py:2 calls open()", "bad.py:2 calls print()"]
