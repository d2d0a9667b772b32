"""``edgefleet up`` and ``edgefleet down`` as a user runs them, with real processes only.

Every port is a free one (``--listen``, ``--dns-listen``, ``--origin-listen``,
``--cache-port``, ``--cache-admin-port``), so the test never collides with a
developer's fleet; the nodes keep their 127.0.x.y addresses.

- A taken port: the message names it and the option that moves it, the exit
  status is not 0, and nothing starts (no data directory, no process).
- ``up --detach``: returns 0 once every node is Ready with its cache, serves
  the API over TLS with the fleet's own CA (``DATA/tls``; keys 0600; the
  cleartext port is not HTTP), and prints commands that work as printed
  (the ``export`` line, CA file included, is the environment of the CLI runs): the GSLB answers a Paris node for a
  Paris client subnet (asked with dnspython, and with the printed dig when
  dig is installed), and the printed curl through the node it printed misses
  then hits, and the printed ``curl --cacert`` gets the page over HTTPS
  (the demo certificate from the cloud, the demo CA alone trusted);
  ``route`` and ``purge`` run. The viewer token reads and cannot write.
  A second ``up`` refuses and says how to stop the first. ``down``
  leaves no process (every pid of up.json, caches included, and no process
  whose command line names the data directory); ``down`` again says that
  nothing runs and exits 0.
- ``up`` in the foreground on the same data (the restart path: store, nodes
  and tokens reused), then SIGINT as a Ctrl-C: everything stops, exit 0.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest

from edgefleet.edge.local import ProcessIdentity, is_running
from tests.cloudproc import EDGEFLEET, free_port
from tests.e2e.fleetmetrics import check_fleet_metrics, check_status_columns
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

API = "/apis/edgefleet.io/v1"
PARIS_NODES = {"127.0.1.1", "127.0.1.2"}
FLEET_NODES = ["fra-parent-1", "par-edge-1", "par-edge-2", "ams-edge-1", "ams-edge-2"]


@dataclass
class Lab:
    root: Path
    data: Path
    ports: dict[str, int]

    @property
    def options(self) -> list[str]:
        p = self.ports
        return [
            "--data",
            str(self.data),
            "--listen",
            f"127.0.0.1:{p['api']}",
            "--dns-listen",
            f"127.0.0.1:{p['dns']}",
            "--origin-listen",
            f"127.0.0.1:{p['origin']}",
            "--cache-port",
            str(p["cache"]),
            "--cache-admin-port",
            str(p["admin"]),
            "--cache-https-port",
            str(p["https"]),
            "--timeout",
            "60",
        ]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "EDGEFLEET_CONFIG": str(self.root / "cli.yaml"), "COLUMNS": "200"}

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, capture_output=True, text=True, env=env or self.env, cwd=self.root, timeout=timeout, check=False
        )

    def edgefleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(EDGEFLEET, *args)

    @property
    def ca(self) -> Path:
        return self.data / "tls" / "ca.crt"

    def verify(self) -> ssl.SSLContext:
        """The fleet's CA alone, as the CLI trusts it."""
        return ssl.create_default_context(cafile=str(self.ca))

    def record(self) -> dict[str, object]:
        result: dict[str, object] = json.loads((self.data / "up.json").read_text())
        return result


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    api, dns_port, origin, cache, admin, https = distinct_free_ports(6)
    made = Lab(
        tmp_path,
        tmp_path / "fleet data",
        {"api": api, "dns": dns_port, "origin": origin, "cache": cache, "admin": admin, "https": https},
    )
    try:
        yield made
    finally:  # whatever happened, leave nothing running
        if (made.data / "up.json").exists():
            made.edgefleet("down", "--data", str(made.data))


def identities(record: dict[str, object]) -> list[tuple[str, ProcessIdentity]]:
    entries = record["processes"]
    assert isinstance(entries, list)
    return [(e["name"], ProcessIdentity(e["pid"], e["startTime"], e["bootId"])) for e in entries]


def processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (zombies do not count)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") and (
                proc / "stat"
            ).read_text().rpartition(")")[2].split()[0] not in ("Z", "X"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def assert_nothing_left(lab: Lab, record: dict[str, object]) -> None:
    alive = [name for name, identity in identities(record) if is_running(identity)]
    assert not alive, f"still running: {alive}"
    assert not processes_naming(str(lab.data)), "a process naming the data directory is left"
    assert not (lab.data / "up.json").exists()


def printed(output: str, start: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(start)]
    assert lines, f"no line starting with {start!r} in:\n{output}"
    return lines[0]


def gslb_answer(lab: Lab, subnet: str) -> set[str]:
    query = dns.message.make_query("demo.edgefleet.test", "A", use_edns=0, options=[dns.edns.ECSOption(subnet, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=lab.ports["dns"], timeout=2)
    return {item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset}


def x_cache(curl_output: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in curl_output.splitlines() if line.lower().startswith("x-cache:")]


def test_a_taken_port_is_named_with_its_option_and_nothing_starts(lab: Lab) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dns_blocker, socket.socket() as cache_blocker:
        dns_blocker.bind(("127.0.0.1", lab.ports["dns"]))
        cache_blocker.bind(("127.0.1.2", lab.ports["cache"]))
        result = lab.edgefleet("up", "--detach", *lab.options)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert f"port {lab.ports['dns']}/udp on 127.0.0.1" in message and "--dns-listen" in message, message
    assert f"port {lab.ports['cache']}/tcp on 127.0.1.2" in message and "--cache-port" in message, message
    assert "nothing was started" in message
    assert not lab.data.exists()
    assert not processes_naming(str(lab.data))


def test_up_detached_serves_as_printed_refuses_a_second_fleet_and_down_stops_everything(lab: Lab) -> None:
    started = time.monotonic()
    result = lab.edgefleet("up", "--detach", *lab.options)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    output = result.stdout
    assert time.monotonic() - started < 60
    record = lab.record()
    assert all(is_running(identity) for _, identity in identities(record))
    roles = [entry["role"] for entry in record["processes"]]  # type: ignore[attr-defined]
    assert sorted(roles) == sorted(["cloud", "origin"] + ["agent"] * 5 + ["cache"] * 5)

    exported = dict(item.split("=", 1) for item in shlex.split(printed(output, "export EDGEFLEET_SERVER="))[1:])
    viewer = printed(output, "viewer token:").split(":", 1)[1].strip()
    server = f"https://127.0.0.1:{lab.ports['api']}"
    assert exported["EDGEFLEET_SERVER"] == server and Path(exported["EDGEFLEET_CA_FILE"]) == lab.ca.absolute()
    assert f"{server}/ui" in output
    assert stat.S_IMODE((lab.data / "tls" / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((lab.data / "tls" / "ca.key").stat().st_mode) == 0o600
    with pytest.raises(httpx.HTTPError):  # TLS only: no cleartext HTTP on the API port
        httpx.get(f"http://127.0.0.1:{lab.ports['api']}/version", timeout=5)
    nodes = httpx.get(
        server + API + "/nodes", headers={"Authorization": f"Bearer {viewer}"}, verify=lab.verify()
    ).json()["items"]
    assert {node["metadata"]["name"]: node["status"]["phase"] for node in nodes} == dict.fromkeys(
        ["fra-parent-1", "par-edge-1", "par-edge-2", "ams-edge-1", "ams-edge-2"], "Ready"
    )
    assert all(node["status"]["workloads"]["cache"]["ready"] for node in nodes)
    refused = httpx.delete(
        server + API + "/nodes/par-edge-1", headers={"Authorization": f"Bearer {viewer}"}, verify=lab.verify()
    )
    assert refused.status_code == 403, "the dashboard's token must not write"

    answer = gslb_answer(lab, "127.0.1.0")
    assert answer and answer <= PARIS_NODES
    dig = printed(output, "dig @127.0.0.1")
    assert f"-p {lab.ports['dns']}" in dig and "+subnet=127.0.1.0/24" in dig
    if shutil.which("dig"):
        dug = lab.run(*shlex.split(dig), "+short")
        assert set(dug.stdout.split()) & answer, dug.stdout

    curl = printed(output, "curl --resolve")
    node = curl.split()[2].rsplit(":", 1)[1]
    assert node in answer
    if shutil.which("curl"):
        first, second = (lab.run(*shlex.split(curl)).stdout for _ in range(2))
    else:  # the same request: Host with the port, to the node's address
        url = f"http://{node}:{lab.ports['cache']}/static/app.js"
        headers = {"Host": f"demo.edgefleet.test:{lab.ports['cache']}"}
        first, second = (
            "\n".join(f"{k}: {v}" for k, v in httpx.head(url, headers=headers).headers.multi_items()) for _ in range(2)
        )
    assert x_cache(first) and not any(value.startswith("HIT") for value in x_cache(first)), first
    assert any(value.startswith("HIT") for value in x_cache(second)), second

    # The printed HTTPS command: the demo certificate, from the cloud, checked against the printed CA file.
    secure = printed(output, "curl --cacert")
    words = shlex.split(secure)
    assert Path(words[2]) == (lab.data / "demo-tls" / "ca.crt").absolute()
    assert words[4] == f"demo.edgefleet.test:{lab.ports['https']}:{node}"
    if shutil.which("curl"):
        fetched = lab.run(*words)
        assert fetched.returncode == 0 and x_cache(fetched.stdout), f"{fetched.stdout}\n{fetched.stderr}"
    else:  # the same: SNI and Host demo.edgefleet.test, to the node's address, trusting the demo CA alone
        context = ssl.create_default_context(cafile=words[2])
        with (
            socket.create_connection((node, lab.ports["https"]), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="demo.edgefleet.test") as tls,
        ):
            tls.sendall(b"HEAD /static/app.js HTTP/1.1\r\nHost: demo.edgefleet.test\r\nConnection: close\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 200")

    as_admin = {**lab.env, **exported}  # the printed export line, as a shell would set it
    get_nodes = next(line.strip() for line in output.splitlines() if line.strip().endswith(" get nodes -o wide"))
    listed = lab.run(*shlex.split(get_nodes), env=as_admin)
    assert listed.returncode == 0 and "par-edge-1" in listed.stdout, listed.stderr
    route = lab.run(*shlex.split(route_line(output)), env=as_admin)
    assert route.returncode == 0 and "par-edge" in route.stdout, route.stderr
    purge = lab.run(*shlex.split(purge_line(output)), env=as_admin)
    assert purge.returncode == 0 and "created" in purge.stdout, purge.stderr

    # Fleet metrics through the cloud: a real Prometheus scrapes every node; get shows real figures.
    def as_admin_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return lab.run(EDGEFLEET, *args, env=as_admin)

    check_fleet_metrics(lab.root / "prometheus", server, lab.ca, as_admin_cli, FLEET_NODES)
    check_status_columns(as_admin_cli)

    again = lab.edgefleet("up", "--detach", *lab.options)
    assert again.returncode != 0
    message = " ".join(again.stderr.split())
    assert "already runs" in message and "down --data" in message, message

    down = lab.edgefleet("down", "--data", str(lab.data))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert_nothing_left(lab, record)
    nothing = lab.edgefleet("down", "--data", str(lab.data))
    assert nothing.returncode == 0 and "nothing runs" in nothing.stdout


def route_line(output: str) -> str:
    return next(line.strip() for line in output.splitlines() if " route demo --client 127.0.1.10" in line)


def purge_line(output: str) -> str:
    return next(line.strip() for line in output.splitlines() if line.strip().endswith(" purge demo /static/app.js"))


def test_ctrl_c_stops_everything(lab: Lab) -> None:
    log = lab.root / "up.out"
    with log.open("w") as output:
        up = subprocess.Popen(
            [EDGEFLEET, "up", *lab.options], stdout=output, stderr=subprocess.STDOUT, env=lab.env, cwd=lab.root
        )
    try:
        wait_until(lambda: "Stop everything" in log.read_text() or up.poll() is not None, 60, what="up to be ready")
        assert up.poll() is None, log.read_text()
        record = lab.record()
        assert not record["detached"]
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, log.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert_nothing_left(lab, record)
    assert "stopped" in log.read_text()
