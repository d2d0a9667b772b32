"""The built-in cache's config, rendered from a node's view: listen addresses, domains, peers, parents, files."""

from __future__ import annotations

import logging
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from edgefleet.api.workloads import WorkloadTemplate
from edgefleet.cache.config import dump_config, load_config
from edgefleet.edge.backoff import Backoff
from edgefleet.edge.cacheconfig import (
    CONFIG_FILE,
    TOKEN_FILE,
    BuiltinCache,
    CacheConfigError,
    cache_argv,
    ensure_token,
    render_cache_config,
    write_config,
)
from edgefleet.edge.supervisor import Running, Supervisor
from tests.waiting import eventually

Doc = dict[str, Any]
WORKDIR = Path("/srv/edge/workloads/cache/abc")


def node(name: str, site: str, *addresses: str) -> Doc:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"site": site, "addresses": list(addresses)},
    }


def site(name: str, *parents: str) -> Doc:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": name},
        "spec": {"region": "eu", "parents": list(parents)},
    }


def domain(name: str, *hostnames: str, **spec: Any) -> Doc:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": name},
        "spec": {
            "hostnames": list(hostnames),
            "origins": [{"url": f"http://origin.{name}.example"}],
            "sites": "tier=edge",
            **spec,
        },
    }


def template(**fields: Any) -> WorkloadTemplate:
    return WorkloadTemplate.model_validate({"builtin": "cache", "command": ["edgefleet", "cache"], **fields})


CACHE = template(ports=[{"name": "http", "port": 8081}, {"name": "admin", "port": 9081}])


def fleet_view() -> list[Doc]:
    """par-1's view: its site (two peers, one draining, one without address) and a parent site."""
    draining = node("par-2", "par", "127.0.0.2")
    draining["spec"]["draining"] = True
    return [
        node("par-1", "par", "127.0.0.1", "::1"),
        draining,
        node("par-3", "par"),  # no address: unreachable, left out
        node("fra-1", "fra-parent", "2001:db8::10"),
        node("ams-1", "ams-parent", "127.0.3.1"),
        site("par", "fra-parent", "lon-parent", "ams-parent"),  # lon-parent has no node in the view
        site("fra-parent"),
        domain("shop", "www.shop.example", cachePolicy={"defaultTtl": 60, "queryString": "sort"}),
        domain("blog", "blog.example"),
    ]


def test_render_listens_on_the_node_address_and_keeps_objects_across_revisions() -> None:
    config = render_cache_config("par-1", fleet_view(), CACHE, WORKDIR)
    assert config.node == "par-1"
    assert config.listen == "127.0.0.1:8081"
    assert config.admin.listen == "127.0.0.1:9081"
    assert config.admin.token_file == WORKDIR / TOKEN_FILE
    assert config.storage.disk is not None and config.storage.disk.path == Path("/srv/edge/cache-data/cache")
    next_revision = render_cache_config("par-1", fleet_view(), CACHE, WORKDIR.with_name("def"))
    assert next_revision.storage.disk is not None and next_revision.storage.disk.path == config.storage.disk.path
    assert config.access_log.path == "/srv/edge/cache-logs/cache/access.log"  # outside the revision's directory
    assert next_revision.access_log.path == config.access_log.path


def test_render_uses_the_template_ports_and_the_node_first_address() -> None:
    view = [node("lab-2", "lab", "127.0.0.2"), site("lab")]
    custom = template(ports=[{"name": "http", "port": 18081}, {"name": "admin", "port": 19081}])
    config = render_cache_config("lab-2", view, custom, WORKDIR)
    assert (config.listen, config.admin.listen) == ("127.0.0.2:18081", "127.0.0.2:19081")
    defaults = render_cache_config("lab-2", view, template(), WORKDIR)
    assert (defaults.listen, defaults.admin.listen) == ("127.0.0.2:8081", "127.0.0.2:9081")


def test_a_node_without_addresses_listens_on_loopback_and_ipv6_gets_brackets() -> None:
    assert render_cache_config("solo", [node("solo", "x")], CACHE, WORKDIR).listen == "127.0.0.1:8081"
    config = render_cache_config("v6", [node("v6", "x", "2001:db8::1")], CACHE, WORKDIR)
    assert config.listen == "[2001:db8::1]:8081"
    assert config.site is not None and config.site.peers[0].url == "http://[2001:db8::1]:8081"


def test_domains_are_copied_with_their_cache_policy_sorted_by_name() -> None:
    config = render_cache_config("par-1", fleet_view(), CACHE, WORKDIR)
    assert [d.name for d in config.domains] == ["blog", "shop"]
    shop = config.domains[1]
    assert shop.hostnames == ["www.shop.example"]
    assert shop.aliases == ["shop.cdn.edgefleet.test", "*.shop.cdn.edgefleet.test"]
    assert shop.origins[0].url == "http://origin.shop.example"
    assert shop.cache_policy.default_ttl == 60 and shop.cache_policy.query_string.mode == "sort"


def test_domains_also_serve_the_names_the_gslb_hands_out_in_the_agents_zone() -> None:
    view = [
        node("n", "s", "127.0.0.1"),
        domain("shop", "www.shop.example", "shop.edge.example.net"),
        domain("blog", "blog.example"),
    ]
    config = render_cache_config("n", view, CACHE, WORKDIR, zone="Edge.Example.NET.")
    assert {d.name: (d.hostnames, d.aliases) for d in config.domains} == {
        "blog": (["blog.example"], ["blog.edge.example.net", "*.blog.edge.example.net"]),
        "shop": (["www.shop.example", "shop.edge.example.net"], ["*.shop.edge.example.net"]),  # not twice
    }
    assert [d.aliases for d in render_cache_config("n", view, CACHE, WORKDIR, zone="").domains] == [[], []]


def test_zone_names_that_do_not_fit_are_left_out_but_the_domain_stays(caplog: pytest.LogCaptureFixture) -> None:
    long_name = ".".join(["d" * 60] * 4)  # a valid object name, but too long under the zone
    full = domain("full", *[f"h{i}.example" for i in range(100)])  # 100 hostnames: fine, aliases are apart
    long_domain = domain(long_name, "long.example", origins=[{"url": "http://origin.example"}])
    view = [node("n", "s", "127.0.0.1"), long_domain, full, domain("ok", "ok.example")]
    with caplog.at_level(logging.WARNING):
        config = render_cache_config("n", view, CACHE, WORKDIR)
    aliases = {d.name: d.aliases for d in config.domains}
    assert aliases[long_name] == [] and len(aliases["full"]) == 2
    assert aliases["ok"] == ["ok.cdn.edgefleet.test", "*.ok.cdn.edgefleet.test"]
    assert f"{long_name}: served without" in caplog.text


def test_builtin_cache_renders_with_its_zone(tmp_path: Path) -> None:
    cache = BuiltinCache("n", zone="cdn.example.org")
    cache.update_view([node("n", "s", "127.0.0.1"), domain("shop", "www.shop.example")])
    text = cache.sync("cache", CACHE, tmp_path)
    assert "*.shop.cdn.example.org" in text and "cdn.edgefleet.test" not in text


def test_site_peers_include_self_and_draining_nodes_and_parents_keep_their_order() -> None:
    config = render_cache_config("par-1", fleet_view(), CACHE, WORKDIR)
    assert config.site is not None
    assert config.site.self_name == "par-1"
    assert [(p.name, p.url) for p in config.site.peers] == [
        ("par-1", "http://127.0.0.1:8081"),
        ("par-2", "http://127.0.0.2:8081"),
    ]
    assert [(p.site, [n.url for n in p.nodes]) for p in config.site.parents] == [
        ("fra-parent", ["http://[2001:db8::10]:8081"]),
        ("ams-parent", ["http://127.0.3.1:8081"]),
    ]


def test_every_node_address_of_the_view_is_trusted_with_tier_fields() -> None:
    config = render_cache_config("par-1", fleet_view(), CACHE, WORKDIR)
    assert config.site is not None
    assert set(config.site.trusted) >= {"127.0.0.1/32", "127.0.0.2/32", "2001:db8::10/128", "127.0.3.1/32"}


def test_invalid_domains_and_repeated_hostnames_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    view = [
        node("n", "s", "127.0.0.1"),
        domain("a-first", "x.example"),
        domain("b-clash", "x.example", "y.example"),
        domain("c-broken", "not a host"),
        domain("d-fine", "z.example"),
    ]
    with caplog.at_level(logging.WARNING):
        config = render_cache_config("n", view, CACHE, WORKDIR)
    assert [d.name for d in config.domains] == ["a-first", "d-fine"]
    assert "b-clash" in caplog.text and "c-broken" in caplog.text


def test_without_its_own_node_the_view_cannot_make_a_config() -> None:
    with pytest.raises(CacheConfigError, match="par-9"):
        render_cache_config("par-9", fleet_view(), CACHE, WORKDIR)


def test_the_rendered_config_round_trips_through_the_cache_loader(tmp_path: Path) -> None:
    config = render_cache_config("par-1", fleet_view(), CACHE, tmp_path)
    (tmp_path / CONFIG_FILE).write_text(dump_config(config))
    assert load_config(tmp_path / CONFIG_FILE) == config


def test_command_line() -> None:
    assert cache_argv(CACHE, python="/venv/bin/python") == [
        "/venv/bin/python",
        "-m",
        "edgefleet",
        "cache",
        "--config",
        CONFIG_FILE,
    ]
    other = template(command=["/opt/cache"], args=["-v"])
    assert cache_argv(other) == ["/opt/cache", "-v", "--config", CONFIG_FILE]
    assert cache_argv(template())[0] == sys.executable


def test_token_is_generated_once_and_private(tmp_path: Path) -> None:
    token = ensure_token(tmp_path)
    assert len(token) >= 32
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
    assert ensure_token(tmp_path) == token


def test_config_is_written_only_when_it_changes(tmp_path: Path) -> None:
    assert write_config(tmp_path, "a: 1\n")
    before = (tmp_path / CONFIG_FILE).stat().st_ino
    assert not write_config(tmp_path, "a: 1\n")
    assert (tmp_path / CONFIG_FILE).stat().st_ino == before
    assert write_config(tmp_path, "a: 2\n")
    assert (tmp_path / CONFIG_FILE).read_text() == "a: 2\n"
    assert list(tmp_path.iterdir()) == [tmp_path / CONFIG_FILE], "no temporary file left behind"


def test_builtin_prepare_writes_config_token_and_endpoint(tmp_path: Path) -> None:
    cache = BuiltinCache("par-1")
    cache.update_view(fleet_view())
    cache.prepare("cache", CACHE, tmp_path)
    written = load_config(tmp_path / CONFIG_FILE)
    assert [d.name for d in written.domains] == ["blog", "shop"]
    endpoint = cache.endpoint("cache")
    assert endpoint is not None and endpoint.url == "http://127.0.0.1:9081"
    assert endpoint.token == (tmp_path / TOKEN_FILE).read_text().strip()
    assert cache.probe_host() == "127.0.0.1"


def test_without_a_view_an_existing_config_is_kept_and_a_missing_one_fails(tmp_path: Path) -> None:
    cache = BuiltinCache("par-1")
    with pytest.raises(CacheConfigError):
        cache.prepare("cache", CACHE, tmp_path)
    cache.update_view(fleet_view())
    first = cache.sync("cache", CACHE, tmp_path)
    cache.update_view([])  # a rebuilt local store: nothing known yet
    assert cache.sync("cache", CACHE, tmp_path) == first


def test_reloads_are_due_once_per_change_and_per_process(tmp_path: Path) -> None:
    cache = BuiltinCache("par-1")
    cache.update_view(fleet_view())
    cache.prepare("cache", CACHE, tmp_path)
    text = cache.sync("cache", CACHE, tmp_path)
    assert not cache.reload_due("cache", 100, text), "pid 100 started with this very file"
    cache.update_view([*fleet_view(), domain("new", "new.example")])
    changed = cache.sync("cache", CACHE, tmp_path)
    assert changed != text and "new.example" in (tmp_path / CONFIG_FILE).read_text()
    assert cache.reload_due("cache", 100, changed)
    cache.reloaded("cache", 100, changed)
    assert not cache.reload_due("cache", 100, changed)
    assert cache.reload_due("cache", 200, changed), "a process we did not start (adopted): reload once"


# -- with a real supervisor: config before start, probe on the node address, SIGHUP without restart ----------

FAKE_CACHE = r"""
import http.server, signal, sys, yaml
path = sys.argv[sys.argv.index("--config") + 1]
config = yaml.safe_load(open(path))
host, port = config["admin"]["listen"].rsplit(":", 1)
def reload(*_):
    with open("reloads.log", "a") as log:
        log.write(str(len(yaml.safe_load(open(path))["domains"])) + "\n")
signal.signal(signal.SIGHUP, reload)
class Admin(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer((host, int(port)), Admin).serve_forever()
"""


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ready_workload(supervisor: Supervisor, name: str) -> Running | None:
    """The workload's process if it runs and is ready."""
    running = supervisor.running().get(name)
    return running if running is not None and running.ready else None


async def test_supervised_builtin_cache_is_configured_probed_and_reloaded(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    fake = template(
        command=[sys.executable, "fake_cache.py"],
        files=[{"path": "fake_cache.py", "content": FAKE_CACHE}],
        ports=[{"name": "admin", "port": port}],
        healthProbe={"http": {"path": "/healthz", "port": port}, "periodSeconds": 1},
    )
    cache = BuiltinCache("lab-2")
    view = [node("lab-2", "lab", "127.0.0.2"), site("lab"), domain("shop", "www.shop.example")]
    cache.update_view(view)
    supervisor = Supervisor(
        tmp_path,
        node_name="lab-2",
        builtins={"cache": cache},
        backoff=Backoff(initial=0.05, maximum=0.2, reset_after=60),
    )
    try:
        await supervisor.apply({"cache": fake})
        # Ready means the probe reached 127.0.0.2, where the fake listens (as the cache would).
        running = await eventually(lambda: ready_workload(supervisor, "cache"))
        assert running is not None  # eventually() returns a truthy value
        assert (running.workdir / CONFIG_FILE).exists(), "written before the start"
        text = cache.sync("cache", running.template, running.workdir)
        assert not cache.reload_due("cache", running.pid, text)
        cache.update_view([*view, domain("blog", "blog.example")])
        text = cache.sync("cache", running.template, running.workdir)
        assert cache.reload_due("cache", running.pid, text)
        assert supervisor.signal("cache", signal.SIGHUP)
        reloads = running.workdir / "reloads.log"
        assert await eventually(lambda: reloads.exists() and reloads.read_text() == "2\n")
        assert supervisor.running()["cache"].pid == running.pid, "reloaded, not restarted"
        assert supervisor.statuses()["cache"].restarts == 0
    finally:
        await supervisor.stop_all()
    assert not supervisor.signal("cache", signal.SIGHUP)


async def test_a_builtin_the_agent_does_not_provide_fails_to_start(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, node_name="n", backoff=Backoff(initial=5, maximum=5, reset_after=60))
    try:
        await supervisor.apply({"cache": template()})
        await eventually(lambda: supervisor.statuses()["cache"].state == "Failed")
        status = supervisor.statuses()["cache"]
        assert "does not provide the built-in workload 'cache'" in (status.message or "")
    finally:
        await supervisor.stop_all()
