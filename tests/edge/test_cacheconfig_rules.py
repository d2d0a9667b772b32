"""The agent renders each Domain's edge rules and the Secrets they reference into the cache config."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cache.config import load_config
from edgefleet.edge.cacheconfig import CONFIG_FILE, BuiltinCache, render_cache_config

from .test_cacheconfig import CACHE, WORKDIR, domain, node, site

SIGNED = [{"name": "signed", "actions": [{"tokenAuth": {"keys": [{"secret": "sign", "key": "k"}]}}]}]


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "edgefleet.io/v1", "kind": "Secret", "metadata": {"name": name}, "spec": {"data": data}}


def view(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [node("par-1", "par", "127.0.0.1"), node("par-2", "par", "127.0.0.2"), site("par"), *extra]


def test_rules_and_the_secrets_they_name_are_rendered() -> None:
    documents = view(
        domain("shop", "www.shop.example", rules=SIGNED),
        domain("blog", "blog.example"),
        secret("sign", k="v1", other="x"),
        secret("unrelated", k="nope"),  # in the view for a Workload: not the cache's business
    )
    config = render_cache_config("par-1", documents, CACHE, WORKDIR)
    shop = next(d for d in config.domains if d.name == "shop")
    assert [rule.name for rule in shop.rules] == ["signed"]
    assert next(d for d in config.domains if d.name == "blog").rules == []
    assert config.secrets == {"sign": {"k": "v1", "other": "x"}}


def test_a_missing_secret_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "edgefleet.edge.cache"):
        config = render_cache_config("par-1", view(domain("lost", "lost.example", rules=SIGNED)), CACHE, WORKDIR)
    assert config.secrets == {}
    assert [d.name for d in config.domains] == ["lost"], "served: its token rule denies (fail closed)"
    assert "Secret sign" in caplog.text and "denied" in caplog.text


def test_the_config_file_is_private_and_round_trips(tmp_path: Path) -> None:
    cache = BuiltinCache("par-1")
    cache.update_view(view(domain("shop", "www.shop.example", rules=SIGNED), secret("sign", k="v1")))
    cache.sync("cache", CACHE, tmp_path)
    path = tmp_path / CONFIG_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_config(path)
    assert loaded.secrets == {"sign": {"k": "v1"}} and loaded.domains[0].rules[0].name == "signed"
    # A key rotation changes the text: the agent's usual SIGHUP reloads it.
    before = path.read_text()
    cache.update_view(view(domain("shop", "www.shop.example", rules=SIGNED), secret("sign", k="v2")))
    cache.sync("cache", CACHE, tmp_path)
    assert path.read_text() != before
