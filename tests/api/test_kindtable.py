"""The light kind table matches what the kind modules register, and the registry loads kinds on demand.

How: in this process, every kind module is imported and its registered
names are compared with :data:`KIND_NAMES`; in a fresh interpreter (the
only place where "not imported yet" can be observed), importing the package
and looking one kind up must load that kind's module and no other.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import edgefleet.api
from edgefleet.api import kindtable, meta
from edgefleet.api.errors import UnknownKind
from edgefleet.api.kindtable import KIND_NAMES, KindName

KIND_MODULES = sorted({name.module for name in KIND_NAMES})
NOT_KINDS = ("edgefleet.api.kinds", "edgefleet.api.rollouts", "edgefleet.api.selectors")


@pytest.mark.parametrize("name", KIND_NAMES, ids=lambda name: name.kind)
def test_the_table_names_what_the_module_registers(name: KindName) -> None:
    importlib.import_module(name.module)
    info = meta.kind_info(name.kind)
    assert (info.plural, info.short_names, info.model.__module__) == (name.plural, name.short_names, name.module)


def test_every_registered_kind_is_in_the_table_in_the_served_order() -> None:
    for module in KIND_MODULES:
        importlib.import_module(module)
    assert [info.kind for info in meta.all_kinds()] == [name.kind for name in KIND_NAMES]


def test_no_two_kinds_answer_to_the_same_name() -> None:
    names = [word for entry in KIND_NAMES for word in {entry.kind.lower(), entry.plural, *entry.short_names}]
    assert sorted(names) == sorted(set(names))


@pytest.mark.parametrize(
    ("word", "kind"),
    [
        ("NO", "Node"),
        ("prefetches", "Prefetch"),
        ("pf", "Prefetch"),
        ("WorkloadRevision", "WorkloadRevision"),
        ("gadget", None),
    ],
)
def test_find(word: str, kind: str | None) -> None:
    found = kindtable.find(word)
    assert (found.kind if found else None) == kind


def test_unknown_names_list_the_table() -> None:
    with pytest.raises(UnknownKind, match="known: admissionwebhooks, artifacts, certificates, clusterinfos, domains"):
        meta.lookup("gadgets")
    with pytest.raises(UnknownKind, match="known kinds: AdmissionWebhook, Artifact, Certificate, ClusterInfo, Domain"):
        meta.kind_info("Gadget")


def test_the_package_resolves_its_names_on_first_use() -> None:
    from edgefleet.api import nodes

    assert edgefleet.api.Node is nodes.Node
    assert edgefleet.api.parse is meta.parse
    assert edgefleet.api.kinds.KINDS[1] is nodes.Node
    with pytest.raises(AttributeError, match="no attribute 'Gadget'"):
        _ = edgefleet.api.Gadget


IMPORTS_AFTER = (
    "import sys\n"
    "import edgefleet.api, edgefleet.api.kindtable\n"
    "first = {m for m in sys.modules if m.startswith('edgefleet.api.')} | ({'pydantic'} & set(sys.modules))\n"
    "from edgefleet.api import meta\n"
    "assert meta.lookup('no').kind == 'Node'\n"
    "after = {m for m in sys.modules if m.startswith('edgefleet.api.')}\n"
    "print(' '.join(sorted(first)), '|', ' '.join(sorted(after)))\n"
)


def test_looking_up_one_kind_imports_that_kind_only() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORTS_AFTER], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first, after = result.stdout.split("|")
    assert first.split() == ["edgefleet.api.kindtable"]  # the package and the table: no model, not even pydantic
    assert "edgefleet.api.nodes" in after.split()
    others = [m for m in after.split() if m in KIND_MODULES + list(NOT_KINDS) and m != "edgefleet.api.nodes"]
    assert others == []
