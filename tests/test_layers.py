"""The layering of DESIGN.md, checked on the source: who may import whom.

``cli`` -> ``cloud`` -> ``store`` -> ``api``; ``api`` is pure (no I/O
modules at all). A violation names the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "edgefleet"

ALLOWED: dict[str, set[str]] = {
    "api": {"api"},
    "store": {"api", "store"},
    "sync": {"api", "sync"},
    "cloud": {"api", "store", "sync", "cloud", "gslb", "logs", "tls"},  # the cloud embeds the GSLB
    "edge": {"api", "sync", "edge", "logs", "tls"},
    "cache": {"api", "cache"},
    "gslb": {"api", "gslb"},
    "cli": {"api", "store", "sync", "cloud", "edge", "cache", "gslb", "cli", "logs", "tls"},
}
ALLOWED_MODULES: dict[str, set[str]] = {
    # The agent renders the cache's config with the cache's own model, so the two cannot drift.
    "edge": {"edgefleet.cache.config", "edgefleet.cache.errors"},
}
"""Single modules of other layers a layer may import, beyond ALLOWED."""
PURE_LAYERS = ("api", "sync")
IO_MODULES = {
    "asyncio", "socket", "sqlite3", "subprocess", "threading", "selectors", "ssl", "http.client",
    "http.server", "urllib.request", "httpx", "aiohttp", "uvicorn", "fastapi", "starlette", "aetcd", "grpc", "shutil",
    "tempfile", "io", "os",
}


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def modules_of(layer: str) -> list[Path]:
    return sorted((SRC / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    assert modules_of(layer), f"no modules in {layer}"
    violations = []
    for path in modules_of(layer):
        for line, module in imports(path):
            parts = module.split(".")
            if module in ALLOWED_MODULES.get(layer, set()):
                continue
            if parts[0] == "edgefleet" and len(parts) > 1 and parts[1] not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not violations, "layering broken:\n" + "\n".join(violations)


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_do_no_io(layer: str) -> None:
    violations = [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for path in modules_of(layer)
        for line, module in imports(path)
        if any(module == m or module.startswith(m + ".") for m in IO_MODULES)
    ]
    assert not violations, f"the {layer} package must do no I/O:\n" + "\n".join(violations)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom edgefleet.cloud import server\n")
    assert imports(bad) == [(1, "asyncio"), (2, "edgefleet.cloud")]
