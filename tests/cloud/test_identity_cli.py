"""The pure parts of the join commands: durations, node names, labels, the node's files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgefleet.cli.fleet import NodeFiles, default_node_name, parse_duration, parse_labels, write_atomically


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
    [("Edge-01", "edge-01"), ("edge_01.PAR.example", "edge-01.par.example"), ("-web-", "web"),
     ("a..b", "a.b")],
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
    files.write(server="http://cloud:7440", node="edge-1", site="par", credential="abcdef." + "0" * 32)
    assert files.joined()
    assert stat.S_IMODE(files.credential.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.root.stat().st_mode) == 0o700
    config, credential = files.read()
    assert config == {"server": "http://cloud:7440", "node": "edge-1", "site": "par"}
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
