"""Redaction of Secrets for viewers: values hidden, keys kept, the stored document untouched."""

from __future__ import annotations

from edgefleet.api.documents import StoredDocument
from edgefleet.api.secrets import REDACTED, redact


def secret(**data: str) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Secret",
        "metadata": {"name": "db", "resourceVersion": "7"},
        "spec": {"data": dict(data)},
    }


def test_every_value_is_hidden_and_every_key_kept() -> None:
    shown = redact(secret(password="hunter2", user="app"))
    assert shown["spec"]["data"] == {"password": REDACTED, "user": REDACTED}
    assert shown["metadata"] == {"name": "db", "resourceVersion": "7"}


def test_the_stored_document_is_not_changed() -> None:
    stored = secret(password="hunter2")
    redact(stored)
    assert stored["spec"]["data"] == {"password": "hunter2"}


def test_a_secret_without_data_shows_none() -> None:
    stored = secret()
    stored["spec"] = {}
    assert redact(stored)["spec"] == {"data": {}}
