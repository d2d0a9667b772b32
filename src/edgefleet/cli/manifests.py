"""Reading manifests for ``apply`` and ``delete -f``: files, directories, stdin.

How: every YAML document of every file (``.yaml``, ``.yml``, ``.json`` in a
directory, sorted) is loaded and validated with the same pure parser the
server uses, *before* anything is sent. One bad document stops the whole
apply with every problem listed by file, document number and field path,
so a typo never leaves the fleet half-configured.

Order: the server refuses a Node whose Site does not exist and the delete
of a Site that still has Nodes, so :func:`in_apply_order` puts Sites first
and Nodes second (everything else keeps its place, after them) and
:func:`in_delete_order` is the reverse.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.api.errors import ApiError, ValidationFailed
from edgefleet.api.meta import KindInfo, Resource, kind_info, parse

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEPENDENCY_ORDER = ("Site", "Node", "Certificate", "Secret")
"""Kinds other objects name, in the order they must exist (a Node names a Site, a Domain a Certificate and the
Secrets of its edge rules)."""


class ManifestError(Exception):
    """One or more manifests cannot be read or are invalid; the message lists them all."""


@dataclass(frozen=True, slots=True)
class Manifest:
    source: str
    """``file.yaml#2`` (the second document of file.yaml)."""
    info: KindInfo
    resource: Resource
    document: dict[str, Any]


def manifest_files(target: str) -> list[tuple[str, str]]:
    """(name, text) for ``-``, a file or every manifest file in a directory."""
    if target == "-":
        return [("<stdin>", sys.stdin.read())]
    path = Path(target)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
        if not files:
            raise ManifestError(f"{target}: no .yaml, .yml or .json files in this directory")
        return [(str(p), p.read_text()) for p in files]
    try:
        return [(target, path.read_text())]
    except OSError as exc:
        raise ManifestError(f"cannot read {target}: {exc.strerror}") from None


def _documents(name: str, text: str) -> list[tuple[str, Any]]:
    import yaml  # here: ``get`` imports this module for ``apply`` and never reads a manifest

    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError(f"{name}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return [(f"{name}#{i + 1}", doc) for i, doc in enumerate(docs) if doc is not None]


def _all_documents(targets: list[str], problems: list[str]) -> list[tuple[str, Any]]:
    """Every document of every target; unreadable files and bad YAML go to ``problems``."""
    documents: list[tuple[str, Any]] = []
    for target in targets:
        try:
            for name, text in manifest_files(target):
                try:
                    documents.extend(_documents(name, text))
                except ManifestError as exc:
                    problems.append(str(exc))
        except ManifestError as exc:
            problems.append(str(exc))
    return documents


def load_manifests(targets: list[str]) -> list[Manifest]:
    """Every document of every target, validated; ManifestError lists all problems."""
    manifests: list[Manifest] = []
    problems: list[str] = []
    for source, doc in _all_documents(targets, problems):
        try:
            resource = parse(doc)
            manifests.append(Manifest(source, kind_info(resource.kind), resource, doc))
        except ValidationFailed as exc:
            problems.extend(f"{source}: {error}" for error in exc.errors)
        except ApiError as exc:
            problems.append(f"{source}: {exc}")
    if problems:
        raise ManifestError("invalid manifests, nothing was applied:\n  " + "\n  ".join(problems))
    return manifests


def in_apply_order(manifests: list[Manifest]) -> list[Manifest]:
    """Sites, then Nodes, then Certificates, then Secrets, then the rest, each in the order given."""
    last = len(DEPENDENCY_ORDER)
    return sorted(
        manifests, key=lambda m: DEPENDENCY_ORDER.index(m.info.kind) if m.info.kind in DEPENDENCY_ORDER else last
    )


def in_delete_order(manifests: list[Manifest]) -> list[Manifest]:
    """The rest, then Nodes, then Sites: what names another object goes before it."""
    return list(reversed(in_apply_order(list(reversed(manifests)))))
