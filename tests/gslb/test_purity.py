"""The GSLB's pure core does no I/O, and the whole package imports only api and itself.

The package has I/O shells (the DNS server), so it cannot be listed among
the pure layers of ``tests/test_layers.py``; its pure modules are checked
here instead, against an allow-list: a new import must be added on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_layers import imports

GSLB = Path(__file__).resolve().parents[2] / "src" / "edgefleet" / "gslb"
COMMON = {"__future__", "collections.abc", "dataclasses", "math", "typing"}
PURE_MODULES: dict[str, set[str]] = {
    "errors": set(),
    "policy": {"hashlib"},
    "fleet": {"heapq", "pydantic"},
    # pathlib: reading the one table file the operator names; importlib: the optional maxminddb.
    "geo": {"bisect", "importlib", "ipaddress", "pathlib"},
    "dnswire": {"functools", "ipaddress", "re", "struct"},
    "zone": {"time"},  # the default clock; tests inject their own
    "demand": set(),
}
NO_IO_CALLS = {"open", "exec", "eval", "__import__", "print", "input"}


def allowed(module: str, extra: set[str]) -> bool:
    if module in COMMON or module in extra:
        return True
    return module.split(".")[:2] in (["edgefleet", "api"], ["edgefleet", "gslb"])


@pytest.mark.parametrize("name", sorted(PURE_MODULES))
def test_pure_modules_import_only_what_they_may(name: str) -> None:
    path = GSLB / f"{name}.py"
    bad = [f"{name}.py:{line} imports {module}" for line, module in imports(path)
           if not allowed(module, PURE_MODULES[name])]
    assert not bad, "the GSLB's pure core must do no I/O:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(PURE_MODULES))
def test_pure_modules_call_no_io_builtins(name: str) -> None:
    tree = ast.parse((GSLB / f"{name}.py").read_text())
    calls = [
        f"{name}.py:{node.lineno} calls {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in NO_IO_CALLS
    ]
    assert not calls, "\n".join(calls)


def test_the_package_imports_only_api_and_itself() -> None:
    bad = [
        f"{path.name}:{line} imports {module}"
        for path in sorted(GSLB.glob("*.py"))
        for line, module in imports(path)
        if module.startswith("edgefleet.") and module.split(".")[1] not in {"api", "gslb"}
    ]
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom edgefleet.cloud import server\nfrom edgefleet.api import meta\n")
    assert [module for _, module in imports(bad) if not allowed(module, set())] == ["asyncio", "edgefleet.cloud"]
