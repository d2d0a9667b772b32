"""The pure parts of the join commands: durations, node names, labels, the node's files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgefleet.cli.fleet import (
    NodeFiles,
    default_node_name,
    parse_duration,
    parse_labels,
    parse_servers,
    write_atomically,
)
from edgefleet.edge.agent import AgentError, load_identity


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), (" 2H ", 7200)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1.5h", "10 m", "1w", "-5", "1h-"])
def test_bad_durations_show_examples(text: str) -> None:
    with pytest.raises(ValueError, match="24h"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("hostname", "name"),
    [("Edge-01", "edge-01"), ("edge_01.PAR.example", "edge-01.par.example"), ("-web-", "web"), ("a..b", "a.b")],
)
def test_default_node_name_from_hostname(hostname: str, name: str) -> None:
    assert default_node_name(hostname) == name


def test_unusable_hostname_asks_for_name() -> None:
    with pytest.raises(ValueError, match="--name"):
        default_node_name("___")


def test_labels() -> None:
    assert parse_labels(["tier=edge", "empty=", "a=b=c"]) == {"tier": "edge", "empty": "", "a": "b=c"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_labels(["novalue"])


def test_node_files_round_trip_with_modes(tmp_path: Path) -> None:
    files = NodeFiles(tmp_path / "node")
    assert not files.joined()
    files.write(
        servers=["http://cloud:7440", "http://cloud-2:7440"],
        node="edge-1",
        site="par",
        credential="abcdef." + "0" * 32,
        insecure=True,
    )
    assert files.joined()
    assert stat.S_IMODE(files.credential.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.root.stat().st_mode) == 0o700
    config, credential = files.read()
    assert config == {
        "server": "http://cloud:7440",
        "servers": ["http://cloud:7440", "http://cloud-2:7440"],
        "node": "edge-1",
        "site": "par",
        "insecure": True,
    }
    assert NodeFiles.servers_of(config) == ["http://cloud:7440", "http://cloud-2:7440"]
    assert load_identity(files.root).servers == ("http://cloud:7440", "http://cloud-2:7440")
    assert credential == "abcdef." + "0" * 32
    assert sorted(p.name for p in files.root.iterdir()) == ["credential", "node.yaml"]


def test_atomic_write_replaces_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "credential"
    path.write_text("old")
    path.chmod(0o644)
    write_atomically(path, "new\n", mode=0o600)
    assert path.read_text() == "new\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reading_a_directory_that_never_joined_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="edgefleet edge join"):
        NodeFiles(tmp_path).read()


def test_servers_repeatable_and_comma_separated() -> None:
    assert parse_servers(["https://a.example:7440/", "http://B.example:7440,https://a.example:7440", " , "]) == [
        "https://a.example:7440",
        "http://b.example:7440",
    ]
    for bad in (["ftp://a.example"], ["a.example:7440"], [","], ["http://user:pw@a.example"]):
        with pytest.raises(ValueError, match="--server"):
            parse_servers(bad)


def test_an_older_node_yaml_with_one_server_still_loads(tmp_path: Path) -> None:
    (tmp_path / "node.yaml").write_text("server: https://cloud:7440/\nnode: edge-1\nsite: par\n")
    (tmp_path / "credential").write_text("abcdef." + "0" * 32 + "\n")
    identity = load_identity(tmp_path)
    assert identity.servers == ("https://cloud:7440",) and identity.server == "https://cloud:7440"
    assert NodeFiles.servers_of({"server": "http://cloud:7440", "node": "edge-1"}) == ["http://cloud:7440"]
    (tmp_path / "node.yaml").write_text("servers: [not-a-url]\nserver: x\nnode: edge-1\n")
    with pytest.raises(AgentError, match="not-a-url"):
        load_identity(tmp_path)
