"""``edgefleet up`` and ``edgefleet down``: a whole CDN on one machine, in one command.

How ``up`` goes, each step only after the one before succeeded:

1. **Refuse what cannot work, start nothing.** The shape is planned
   (:mod:`edgefleet.cli.upplan`). A fleet that already runs from ``--data``
   (``DATA/up.json`` naming a live process) or a cloud that already answers
   on ``--listen`` is reported with how to stop it. Then every socket the
   fleet will bind is tried (API, DNS over UDP and TCP, origin, every node's
   cache and admin port on its own 127.0.x.y address); each taken one is
   named with the option that moves it.
2. **Start** the cloud (SQLite in DATA, the GSLB on ``--dns-listen`` with
   the packaged geo table, HTTPS with the fleet's own CA: ``DATA/tls``,
   made on the first run by :func:`edgefleet.tls.ensure_pki` for
   127.0.0.1, localhost, the host name and the ``--listen`` address) and
   the demo origin, apply the Sites, the ``demo`` Certificate (issued by a
   demo CA of its own, ``DATA/demo-tls``, made on the first run like the
   fleet's, for the demo hostnames and ``*.demo.<zone>``), the
   ``demo`` Domain (HTTPS with it) and the cache Workload (with an ``https`` port), make a viewer token for the
   dashboard (kept in ``DATA/viewer-token``), join every node with one
   bootstrap token (the join request of ``edgefleet edge join``, made in
   process, each node given the CA in its directory as ``--ca-hash`` would)
   and run one ``edgefleet edge run`` per node. Every client of ``up``
   trusts ``DATA/tls/ca.crt`` alone, and the printed ``export`` line sets
   ``EDGEFLEET_CA_FILE`` to it, so the printed commands work as printed. Every process is a
   child in its own session (so a Ctrl-C in the terminal reaches only
   ``up``, which then stops them in order) logging to ``DATA/logs/``.
3. **Wait**, with a live table, until every node is Ready (by a report
   made after this start: a restarted fleet's store still holds the last
   run's statuses), every cache ready (``status.workloads.cache.ready``, and
   its port accepting connections) and the GSLB answers each edge site's
   clients with that site's nodes; at most ``--timeout`` seconds,
   after which the error names what is missing and its log. A child that
   exits meanwhile ends the wait at once with its log.
4. **Record and tell.** ``DATA/up.json`` lists every process (pid, start
   time and boot id, so a recycled pid is never taken for ours), ports and
   addresses; then the try-it text, with the node the GSLB really answered.
5. ``--detach`` returns here. Otherwise ``up`` waits for Ctrl-C (or
   SIGTERM), warning (not stopping) when a process exits: a dead cloud is
   a thing to try, the nodes keep serving.

Stopping (Ctrl-C, or ``edgefleet down`` from the record) goes agents first
(SIGTERM: an agent leaves its workloads running, and a live agent would
restart a stopped cache), then the caches (what ``edgefleet edge
stop-workloads`` does, for every node whose cache is alive at once, in this
process: five interpreters starting side by side took seconds; then SIGKILL
for any survivor), then the origin and the cloud; each process gets SIGTERM,
then SIGKILL after a grace period. ``up.json`` is removed last.

Running ``up`` again on the same DATA reuses the store, the joined nodes
(re-pointed at the cloud if ``--listen`` changed) and the tokens; a DATA
holding nodes the new shape lacks is refused (``--fresh`` starts over).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from edgefleet.api import lifecycle
from edgefleet.api.meta import lookup, parse
from edgefleet.api.nodes import INFO as NODES
from edgefleet.cli import upplan
from edgefleet.cli.client import ApiClient, ClientError
from edgefleet.cli.common import fail
from edgefleet.cli.fleet import FleetClient, NodeFiles
from edgefleet.cli.trust import default_hosts
from edgefleet.cli.upplan import Endpoint, FleetPlan, Logs, NodeProgress, ProcessEntry, UpRecord
from edgefleet.edge import local as edge
from edgefleet.tls import ClientTrust, PkiFiles, ensure_pki

UP_FILE = "up.json"
DEFAULT_DATA = Path("edgefleet-up")
POLL_SECONDS = 0.5
TERM_GRACE_SECONDS = 10.0
STOP_WORKLOADS_TIMEOUT = 60.0
START_TIMEOUT = 30.0
TLS_DIR = "tls"
DEMO_TLS_DIR = "demo-tls"
"""The demo Domain's own CA and certificate (not the fleet's control-channel CA: a customer's certificate
comes from elsewhere, and the fleet's CA should sign nothing but the fleet's endpoints)."""
ROUTE_DEFAULT_GEO = Path("examples/geo.csv")
"""Where ``edgefleet route`` finds a geo table by default (see :mod:`edgefleet.cli.route`)."""

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

DataOpt = Annotated[
    Path, typer.Option("--data", help="Directory of the fleet: store, node directories, logs, tokens and up.json")
]


class UpError(Exception):
    """Something keeps the fleet from starting; the message says what and where to look."""


def register(app: typer.Typer) -> None:
    """Add ``up`` and ``down`` to the ``edgefleet`` app."""
    app.command("up")(up)
    app.command("down")(down)


# -- processes -----------------------------------------------------------------------------


@dataclass
class Child:
    """A process this fleet runs: our Popen while ``up`` lives, else just its identity from up.json."""

    entry: ProcessEntry
    log: str
    popen: subprocess.Popen[bytes] | None = None
    reported: bool = False

    @property
    def identity(self) -> edge.ProcessIdentity:
        return edge.ProcessIdentity(self.entry.pid, self.entry.start_time, self.entry.boot_id)

    def running(self) -> bool:
        if self.popen is not None:
            self.popen.poll()  # reap it if it ended, so it does not linger as a zombie
        return edge.is_running(self.identity)

    def exit_text(self) -> str:
        code = self.popen.returncode if self.popen is not None else None
        return f"exited with status {code}" if code is not None else "is gone"


def edgefleet_argv(*args: str) -> list[str]:
    """The edgefleet command run by this very Python (a venv's or a system install's alike)."""
    return [sys.executable, "-m", "edgefleet", *args]


def spawn(role: str, name: str, args: Sequence[str], log: Path, data_dir: str = "") -> Child:
    """Start ``edgefleet ARGS`` in its own session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        popen = subprocess.Popen(
            edgefleet_argv(*args),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    identity = edge.identify_child(popen.pid)
    entry = ProcessEntry(role, name, popen.pid, identity.start_time, identity.boot_id, data_dir)
    return Child(entry, str(log), popen)


def terminate(children: Sequence[Child], grace: float = TERM_GRACE_SECONDS) -> None:
    """SIGTERM each running child's process group, wait up to ``grace`` s for all, then SIGKILL the rest."""
    alive = [child for child in children if child.running()]
    for child in alive:
        edge.signal_group(child.entry.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [child for child in alive if child.running()]
    for child in alive:
        edge.signal_group(child.entry.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [child for child in alive if child.running()]


def running_caches(node_dir: Path) -> list[Child]:
    """The node's workload processes that run now, from its supervisor's state files."""
    found = []
    for workload in edge.recorded_workloads(node_dir):
        identity = workload.identity
        entry = ProcessEntry(
            "cache",
            f"{node_dir.name}/{workload.name}",
            identity.pid,
            identity.start_time,
            identity.boot_id,
            str(node_dir),
        )
        child = Child(entry, str(workload.log_file))
        if child.running():
            found.append(child)
    return found


def stop_workloads(node_dirs: Sequence[Path]) -> None:
    """Stop the workloads of every node whose workloads run, all at once; SIGKILL what survives.

    What ``edgefleet edge stop-workloads`` does, in this process (one
    interpreter instead of one per node). Nodes with nothing running are
    skipped: the supervisor would start a dead workload before stopping it.
    """
    caches = {node_dir: running_caches(node_dir) for node_dir in node_dirs}
    busy = [node_dir for node_dir, found in caches.items() if found]
    if busy:
        for node_dir, outcome in zip(busy, asyncio.run(_stop_workloads(busy)), strict=True):
            if isinstance(outcome, BaseException):
                err.print(f"warning: stopping the workloads of {node_dir}: {outcome}", markup=False)
    terminate([child for found in caches.values() for child in found], grace=1.0)


async def _stop_workloads(node_dirs: Sequence[Path]) -> list[BaseException | None]:
    async def one(node_dir: Path) -> None:
        await asyncio.wait_for(edge.stop_workloads(node_dir), STOP_WORKLOADS_TIMEOUT)

    return await asyncio.gather(*(one(node_dir) for node_dir in node_dirs), return_exceptions=True)


def stop_fleet(children: Sequence[Child]) -> None:
    """Agents, then their workloads, then the origin and the cloud (see the module docstring)."""
    agents = [child for child in children if child.entry.role == "agent"]
    terminate(agents)
    stop_workloads([Path(child.entry.data_dir) for child in agents if child.entry.data_dir])
    terminate([child for child in children if child.entry.role == "cache"], grace=1.0)  # recorded, if any left
    terminate([child for child in children if child.entry.role == "origin"])
    terminate([child for child in children if child.entry.role == "cloud"])


@contextlib.contextmanager
def interrupts_ignored(note: str) -> Iterator[None]:
    """Let a stop finish: a second Ctrl-C (or SIGTERM) only prints ``note``."""

    def remind(signum: int, frame: FrameType | None) -> None:
        err.print(note)

    previous = {sig: signal.signal(sig, remind) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def terminations_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP (terminal closed) stop ``up`` like Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- the up record ----------------------------------------------------------------------------


def up_file(data: Path) -> Path:
    return data / UP_FILE


def read_record(data: Path) -> UpRecord | None:
    """``DATA/up.json``, or None when there is none; UpError when it is unreadable."""
    path = up_file(data)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UpError(f"{path} is unreadable ({exc}); stop what it started by hand, then delete it") from None
    try:
        return UpRecord.from_document(document)
    except ValueError as exc:
        raise UpError(f"{path}: {exc}; stop what it started by hand, then delete it") from None


def write_record(data: Path, record: UpRecord) -> None:
    path = up_file(data)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record.to_document(), indent=2) + "\n")
    os.replace(temporary, path)


def recorded_children(record: UpRecord) -> list[Child]:
    return [Child(entry, "") for entry in record.processes]


def live_processes(record: UpRecord) -> list[ProcessEntry]:
    return [child.entry for child in recorded_children(record) if child.running()]


# -- checks before anything starts -----------------------------------------------------------


def refuse_second_fleet(data: Path, plan: FleetPlan) -> None:
    """UpError if a fleet runs from ``data`` or a cloud answers on the API address; drop a stale up.json."""
    record = read_record(data)
    if record is not None:
        alive = live_processes(record)
        if alive:
            names = ", ".join(f"{entry.name} (pid {entry.pid})" for entry in alive[:4])
            raise UpError(
                f"edgefleet up already runs from {data} (API {record.server}; {names}"
                f"{', ...' if len(alive) > 4 else ''}); stop it with `{cli_command()} down --data "
                f"{shlex.quote(str(data))}` (or Ctrl-C in its terminal), or use another --data"
            )
        up_file(data).unlink(missing_ok=True)  # left by a fleet that died without stopping
    if cloud_answers(plan.server):
        raise UpError(
            f"an edgefleet cloud already answers on {plan.server} (another fleet, started from "
            "another --data or by hand); stop it, or choose another address with --listen"
        )


def cloud_answers(server: str) -> bool:
    """Whether an edgefleet cloud answers at ``server``'s address, over HTTPS (any certificate) or HTTP."""
    address = server.partition("://")[2]
    for url in (f"https://{address}", f"http://{address}"):
        try:  # no token is sent: any certificate will do to see who answers
            response = httpx.get(url + "/version", timeout=1.0, verify=False)
            if response.status_code == 200 and "version" in response.json():
                return True
        except (httpx.HTTPError, ValueError):
            continue
    return False


def port_free(need: upplan.PortNeed) -> bool:
    """Whether ``need`` can be bound now (TCP with SO_REUSEADDR, as the servers bind)."""
    family = socket.AF_INET6 if ":" in need.endpoint.host else socket.AF_INET
    kind = socket.SOCK_STREAM if need.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((need.endpoint.host, need.endpoint.port))
        except OSError:
            return False
    return True


def check_ports(plan: FleetPlan) -> None:
    taken = [need.taken_message() for need in upplan.port_needs(plan) if not port_free(need)]
    if taken:
        raise UpError("ports the fleet needs are taken (nothing was started):\n" + "\n".join(taken))


# -- the data directory ------------------------------------------------------------------------


def prepare_data(data: Path, plan: FleetPlan, fresh: bool) -> None:
    """Create DATA (emptied first with --fresh); UpError if it holds nodes this shape does not have."""
    nodes_dir = data / "nodes"
    if fresh and data.exists():
        if not _looks_like_up_data(data):
            raise UpError(
                f"--fresh would delete {data}, which does not look like an `edgefleet up` directory "
                "(no store.db, nodes/ or logs/); remove it yourself or choose another --data"
            )
        shutil.rmtree(data)
    planned = {node.name for node in plan.nodes}
    existing = {path.name for path in nodes_dir.iterdir()} if nodes_dir.is_dir() else set()
    if existing - planned:
        raise UpError(
            f"{data} holds nodes this shape does not have ({', '.join(sorted(existing - planned))}): "
            "start over with --fresh (deletes it), use the same --sites/--nodes, or another --data"
        )
    for sub in (data, data / "logs", nodes_dir):
        sub.mkdir(mode=0o700, parents=True, exist_ok=True)
    ensure_pki(data / TLS_DIR, [*default_hosts(), plan.ports.api.host])
    ensure_pki(data / DEMO_TLS_DIR, upplan.certificate_hosts())


def _looks_like_up_data(data: Path) -> bool:
    return not any(data.iterdir()) or any((data / name).exists() for name in ("store.db", "nodes", "logs"))


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def packaged_geo() -> Path:
    """The geo table shipped in the package (a copy of examples/geo.csv)."""
    return Path(str(resources.files("edgefleet").joinpath("data/geo.csv")))


# -- starting ----------------------------------------------------------------------------


@dataclass
class Fleet:
    """The processes of one ``up``, started in order and stopped in reverse."""

    data: Path
    plan: FleetPlan
    geo: Path
    children: list[Child] = field(default_factory=list)
    admin_token: str = ""
    viewer_token: str = ""

    @property
    def logs(self) -> Logs:
        return Logs(str(self.data))

    def node_dir(self, node: str) -> Path:
        return (self.data / "nodes" / node).absolute()

    @property
    def pki(self) -> PkiFiles:
        return PkiFiles((self.data / TLS_DIR).absolute())

    @property
    def demo_pki(self) -> PkiFiles:
        """The demo CA (``ca.crt``, what the printed curl trusts) and the demo Domain's certificate."""
        return PkiFiles((self.data / DEMO_TLS_DIR).absolute())

    def demo_certificate(self) -> dict[str, Any]:
        pki = self.demo_pki
        return upplan.certificate_manifest(pki.server_cert.read_text(), pki.server_key.read_text())

    @property
    def trust(self) -> ClientTrust:
        """What every client of this fleet trusts: its own CA, alone."""
        return ClientTrust(self.pki.ca_cert)

    def start_cloud_and_origin(self) -> None:
        ports = self.plan.ports
        self.children.append(
            spawn("origin", "origin", ["origin", "--listen", str(ports.origin)], Path(self.logs.origin))
        )
        self.children.append(
            spawn(
                "cloud",
                "cloud",
                [
                    "cloud",
                    "--listen",
                    str(ports.api),
                    "--store",
                    f"sqlite:///{self.data.absolute()}/store.db",
                    "--admin-token-file",
                    str(self.data.absolute() / "admin-token"),
                    "--dns-listen",
                    str(ports.dns),
                    "--geo",
                    str(self.geo.absolute()),
                    "--tls-cert",
                    str(self.pki.server_cert),
                    "--tls-key",
                    str(self.pki.server_key),
                    "--tls-ca",
                    str(self.pki.ca_cert),
                ],
                Path(self.logs.cloud),
            )
        )
        wait_for(lambda: _http_ok(self.plan.server + "/readyz", self.trust), self.children[-1], "the cloud to be ready")
        wait_for(lambda: _tcp_open(ports.origin), self.children[0], "the origin to listen")

    def tokens(self) -> None:
        admin = read_secret(self.data / "admin-token")
        if admin is None:
            raise UpError(
                f"{self.data}/admin-token is missing, and the store has an admin token already: start over with --fresh"
            )
        self.admin_token = admin
        viewer = read_secret(self.data / "viewer-token")
        if viewer is None or not _http_ok(f"{self.plan.server}/apis/edgefleet.io/v1/sites", self.trust, viewer):
            with contextlib.closing(FleetClient(self.plan.server, admin, trust=self.trust)) as client:
                viewer = str(
                    client.call(
                        "POST", "/bootstrap-tokens", {"role": "viewer", "description": "edgefleet up: the dashboard"}
                    )["token"]
                )
            write_secret(self.data / "viewer-token", viewer)
        self.viewer_token = viewer

    def apply(self) -> None:
        with ApiClient(self.plan.server, self.admin_token, trust=self.trust) as client:
            for document in upplan.manifests(self.plan, self.demo_certificate()):
                apply_document(client, document)

    def join(self) -> None:
        """Join the nodes that have not joined (one bootstrap token); point the others at this cloud."""
        pending = [node for node in self.plan.nodes if not NodeFiles(self.node_dir(node.name)).joined()]
        for node in self.plan.nodes:
            if node not in pending:
                _repoint(NodeFiles(self.node_dir(node.name)), self.plan.server, self.pki.ca_cert.read_bytes())
        if not pending:
            return
        with contextlib.closing(FleetClient(self.plan.server, self.admin_token, trust=self.trust)) as admin:
            token = str(
                admin.call(
                    "POST", "/bootstrap-tokens", {"ttlSeconds": 600, "description": "edgefleet up: joins its nodes"}
                )["token"]
            )
        with contextlib.closing(FleetClient(self.plan.server, token, trust=self.trust)) as client:
            for node in pending:
                joined = client.call(
                    "POST",
                    "/join",
                    {
                        "name": node.name,
                        "site": node.site,
                        "addresses": [node.address],
                        "labels": {"edgefleet.io/role": "cache"},
                    },
                )
                NodeFiles(self.node_dir(node.name)).write(
                    servers=[self.plan.server],
                    node=node.name,
                    site=node.site,
                    credential=str(joined["credential"]),
                    ca_pem=self.pki.ca_cert.read_bytes(),
                )

    def start_agents(self) -> None:
        for node in self.plan.nodes:
            directory = self.node_dir(node.name)
            self.children.append(
                spawn(
                    "agent",
                    node.name,
                    [
                        "edge",
                        "run",
                        "--data-dir",
                        str(directory),
                        "--listen",
                        "127.0.0.1:0",
                    ],
                    Path(self.logs.agent(node.name)),
                    data_dir=str(directory),
                )
            )

    def check_children(self) -> None:
        """UpError naming the first child that exited, with its log."""
        for child in self.children:
            if not child.running():
                raise UpError(
                    f"the {child.entry.name} process {child.exit_text()}: see {child.log}\n{tail(Path(child.log))}"
                )

    def record(self, detached: bool) -> UpRecord:
        caches = [child.entry for node in self.plan.nodes for child in running_caches(self.node_dir(node.name))]
        ports = self.plan.ports
        return UpRecord(
            self.plan.server,
            str(ports.dns),
            str(ports.origin),
            (ports.cache_http, ports.cache_admin),
            {node.name: node.address for node in self.plan.nodes},
            tuple(child.entry for child in self.children) + tuple(caches),
            detached,
        )


def apply_document(client: ApiClient, document: dict[str, Any]) -> None:
    """Create, or replace when it differs (as ``edgefleet apply`` does)."""
    info = lookup(document["kind"])
    name = document["metadata"]["name"]
    try:
        existing = client.get(info, name)
    except ClientError as exc:
        if exc.code != 404:
            raise
        client.create(info, document)
        return
    if lifecycle.is_unchanged(info.model.model_validate(existing), parse(document)):
        return
    metadata = {**document["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}
    client.replace(info, {**document, "metadata": metadata})


def _repoint(files: NodeFiles, server: str, ca_pem: bytes) -> None:
    """A node joined by an earlier ``up`` on another --listen (or before TLS) dials this cloud with its CA now."""
    config, credential = files.read()
    current_ca = files.ca.read_bytes() if files.ca.exists() else None
    if NodeFiles.servers_of(config) != [server] or current_ca != ca_pem or config.get("insecure"):
        files.write(
            servers=[server],
            node=str(config["node"]),
            site=str(config.get("site", "")),
            credential=credential,
            ca_pem=ca_pem,
        )


def _http_ok(url: str, trust: ClientTrust, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.get(url, headers=headers, timeout=2.0, verify=trust.ssl_context()).status_code == 200
    except httpx.HTTPError:
        return False


def _tcp_open(endpoint: Endpoint, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], bool], child: Child, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not child.running():
            raise UpError(
                f"the {child.entry.name} process {child.exit_text()} while waiting for {what}: "
                f"see {child.log}\n{tail(Path(child.log))}"
            )
        if time.monotonic() > deadline:
            raise UpError(f"timed out after {timeout:.0f}s waiting for {what}: see {child.log}")
        time.sleep(0.1)


def tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


# -- waiting until ready -----------------------------------------------------------------------


def ask_gslb(dns: Endpoint, subnet: str) -> list[str]:
    """The A records the GSLB answers for the demo name to a client of ``subnet`` ([] on no answer)."""
    query_id = secrets.randbelow(65536)
    family = socket.AF_INET6 if ":" in dns.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(upplan.dns_query(upplan.DEMO_HOST, subnet, query_id), (dns.host, dns.port))
            return upplan.a_records(sock.recv(4096), query_id)
        except (OSError, ValueError):
            return []


@dataclass
class Readiness:
    nodes: list[NodeProgress]
    answers: dict[str, list[str]]

    def dns(self, plan: FleetPlan) -> dict[str, bool]:
        return {site.name: upplan.dns_ready(site, self.answers.get(site.name, [])) for site in plan.edges}

    def ready(self, plan: FleetPlan) -> bool:
        return all(item.ready for item in self.nodes) and all(self.dns(plan).values())


def observe(fleet: Fleet, client: ApiClient, since: datetime) -> Readiness:
    try:
        documents = client.list(NODES)["items"]
    except ClientError:
        documents = []
    port = fleet.plan.ports.cache_http
    listening = [node.name for node in fleet.plan.nodes if _tcp_open(Endpoint(node.address, port), timeout=0.2)]
    answers = {site.name: ask_gslb(fleet.plan.ports.dns, site.client_subnet) for site in fleet.plan.edges}
    return Readiness(upplan.progress(fleet.plan, documents, since, listening), answers)


def progress_table(plan: FleetPlan, state: Readiness, elapsed: float) -> Group:
    nodes = Table(title=f"waiting for the fleet ({elapsed:.0f}s)", title_justify="left", box=None)
    for column in ("NODE", "SITE", "ADDRESS", "PHASE", "CACHE"):
        nodes.add_column(column)
    for item in state.nodes:
        phase = f"[green]{item.phase}[/]" if item.phase == "Ready" else f"[yellow]{item.phase}[/]"
        cache = "[green]ready[/]" if item.cache == "ready" else f"[yellow]{escape(item.cache)}[/]"
        nodes.add_row(item.node.name, item.node.site, item.node.address, phase, cache)
    dns = Table(box=None)
    for column in ("DNS", "CLIENTS", "ANSWER"):
        dns.add_column(column)
    ok = state.dns(plan)
    for site in plan.edges:
        answer = ", ".join(state.answers.get(site.name, [])) or "-"
        dns.add_row(upplan.DEMO_HOST, site.client_subnet, f"[green]{answer}[/]" if ok[site.name] else answer)
    return Group(nodes, dns)


def wait_ready(fleet: Fleet, timeout: float, since: datetime) -> Readiness:
    """Poll until ready, showing progress; UpError naming what is not ready after ``timeout`` seconds.

    ``since``: when the agents were started; older node statuses are left over from an earlier run.
    """
    started = time.monotonic()
    with (
        ApiClient(fleet.plan.server, fleet.admin_token, timeout=5.0, trust=fleet.trust) as client,
        Live(console=out, auto_refresh=False) as live,
    ):
        while True:
            state = observe(fleet, client, since)
            elapsed = time.monotonic() - started
            live.update(progress_table(fleet.plan, state, elapsed), refresh=True)
            if state.ready(fleet.plan):
                return state
            fleet.check_children()
            if elapsed > timeout:
                missing = upplan.waiting_for(state.nodes, state.dns(fleet.plan), fleet.logs)
                raise UpError(f"the fleet was not ready after {timeout:.0f}s:\n" + "\n".join(missing))
            time.sleep(POLL_SECONDS)


# -- what to print ---------------------------------------------------------------------------


def cli_command() -> str:
    """How the user runs edgefleet: ``edgefleet`` when that is this install on PATH, else its path."""
    script = Path(sys.executable).with_name("edgefleet")
    found = shutil.which("edgefleet")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "edgefleet"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m edgefleet"
    with contextlib.suppress(ValueError):
        return shlex.quote(str(script.absolute().relative_to(Path.cwd())))
    return shlex.quote(str(script))


def route_geo_argument(geo: Path) -> str:
    """``--geo PATH`` for ``edgefleet route``, unless its default table is the same as the one in use."""
    with contextlib.suppress(OSError):
        if ROUTE_DEFAULT_GEO.read_bytes() == geo.read_bytes():
            return ""
    shown = geo.absolute()
    with contextlib.suppress(ValueError):
        shown = shown.relative_to(Path.cwd())
    return f" --geo {shlex.quote(str(shown))}"


# -- the commands ----------------------------------------------------------------------------


def up(
    data: DataOpt = DEFAULT_DATA,
    sites: Annotated[int, typer.Option(help="Edge sites: Paris, Amsterdam, then London, New York, ...")] = 2,
    nodes: Annotated[int, typer.Option(help="Nodes per edge site (the parent site in Frankfurt has one)")] = 2,
    listen: Annotated[str, typer.Option(help="The cloud's API and dashboard, HOST:PORT")] = "127.0.0.1:7440",
    dns_listen: Annotated[str, typer.Option(help="The GSLB's DNS (UDP and TCP), HOST:PORT")] = "127.0.0.1:8053",
    origin_listen: Annotated[str, typer.Option(help="The demo origin, HOST:PORT")] = "127.0.0.1:8080",
    cache_port: Annotated[int, typer.Option(help="Every cache's HTTP port, on its node's own address")] = 8081,
    cache_admin_port: Annotated[int, typer.Option(help="Every cache's admin port, on its node's address")] = 9081,
    cache_https_port: Annotated[int, typer.Option(help="Every cache's HTTPS port, on its node's address")] = 8443,
    geo: Annotated[
        Path | None,
        typer.Option(
            help="Geo table for the GSLB (default: the packaged one, placing 127.0.<site>.0/24 in each site's city)"
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every node and cache to be ready")] = 120.0,
    detach: Annotated[
        bool, typer.Option(help="Return once ready and leave the fleet running; `edgefleet down` stops it")
    ] = False,
    fresh: Annotated[bool, typer.Option(help="Delete DATA first: a new store, new nodes, new tokens")] = False,
) -> None:
    """Run a whole CDN on this machine: cloud, GSLB DNS, origin, a parent and edge sites of caching nodes.

    Waits until every node is Ready and every cache serves, then prints how
    to try it: the dashboard and its viewer token, the admin token, a dig
    and a curl through the node the GSLB answers, a purge. Ctrl-C stops it
    all; with --detach it keeps running until `edgefleet down`. Running it
    again on the same DATA reuses the store, the nodes and the tokens.
    """
    try:
        endpoint = upplan.parse_endpoint
        ports = upplan.Ports(
            endpoint(listen, "--listen"),
            endpoint(dns_listen, "--dns-listen"),
            endpoint(origin_listen, "--origin-listen"),
            cache_port,
            cache_admin_port,
            cache_https_port,
        )
        plan = upplan.plan_fleet(sites, nodes, ports)
        geo_table = geo or packaged_geo()
        if not geo_table.is_file():
            raise UpError(f"--geo {geo_table}: no such file")
        refuse_second_fleet(data, plan)
        check_ports(plan)
        prepare_data(data, plan, fresh)
    except (ValueError, UpError) as exc:
        fail(str(exc))
    run(Fleet(data, plan, geo_table), timeout, detach)


def run(fleet: Fleet, timeout: float, detach: bool) -> None:
    released = False
    try:
        with terminations_as_interrupts():
            since = datetime.now(UTC)
            start(fleet)
            write_record(fleet.data, fleet.record(detach))  # so that `down` works even if this process dies
            state = wait_ready(fleet, timeout, since)
            write_record(fleet.data, fleet.record(detach))  # now with the caches
            tell(fleet, state, detach)
            if detach:
                released = True
                return
            watch(fleet)
            released = not up_file(fleet.data).exists()  # `edgefleet down` stopped it
    except KeyboardInterrupt:
        err.print("interrupted")
    except (UpError, ClientError, ValueError, OSError) as exc:
        shutdown(fleet)
        released = True
        fail(str(exc))
    finally:
        if not released:
            shutdown(fleet)


def start(fleet: Fleet) -> None:
    ports = fleet.plan.ports
    out.print(
        f"starting the cloud (API {fleet.plan.server}, DNS {ports.dns}) and the origin ({ports.origin}); "
        f"logs in {fleet.data}/logs/"
    )
    fleet.start_cloud_and_origin()
    fleet.tokens()
    fleet.apply()
    out.print(
        f"applied {len(fleet.plan.sites)} sites, domain {upplan.DOMAIN} and workload {upplan.WORKLOAD}; "
        f"joining and starting {len(fleet.plan.nodes)} nodes"
    )
    fleet.join()
    fleet.start_agents()


def tell(fleet: Fleet, state: Readiness, detach: bool) -> None:
    first = fleet.plan.edges[0]
    how = upplan.TryIt(
        cli=cli_command(),
        data=str(fleet.data),
        admin_token=fleet.admin_token,
        viewer_token=fleet.viewer_token,
        first_node=state.answers[first.name][0],
        geo_argument=route_geo_argument(fleet.geo),
        detached=detach,
        ca_file=str(fleet.pki.ca_cert),
        demo_ca_file=str(fleet.demo_pki.ca_cert),
    )
    out.print()
    out.print(upplan.try_it(fleet.plan, how), markup=False, soft_wrap=True)


def watch(fleet: Fleet) -> None:
    """Until Ctrl-C: warn once about each process that exits; return if `edgefleet down` removed up.json."""
    while up_file(fleet.data).exists():
        for child in fleet.children:
            if not child.reported and not child.running():
                child.reported = True
                err.print(
                    f"[yellow]warning:[/] {child.entry.name} {child.exit_text()}; see {child.log}. "
                    "The rest keeps running; Ctrl-C stops everything."
                )
        time.sleep(1.0)
    err.print(f"{up_file(fleet.data)} was removed (edgefleet down): stopped")


def shutdown(fleet: Fleet) -> None:
    with interrupts_ignored("still stopping the fleet; it takes a few seconds"):
        err.print("stopping the agents, the caches, the origin and the cloud ...")
        stop_fleet(fleet.children)
        up_file(fleet.data).unlink(missing_ok=True)
        err.print("stopped")


def down(data: DataOpt = DEFAULT_DATA) -> None:
    """Stop the fleet `edgefleet up` runs from DATA: agents, caches, origin, cloud. Nothing running is fine."""
    try:
        record = read_record(data)
    except UpError as exc:
        fail(str(exc))
    if record is None:
        out.print(f"nothing runs from {data} (no {up_file(data)}); nothing to stop")
        return
    children = recorded_children(record)
    alive = [child for child in children if child.running()]
    with interrupts_ignored("still stopping the fleet; it takes a few seconds"):
        stop_fleet(children)
    up_file(data).unlink(missing_ok=True)
    if not alive:
        out.print(f"nothing was running from {data} (its processes had exited); removed {up_file(data)}")
        return
    left = [child.entry for child in children if child.running()]
    if left:
        fail("some processes did not stop: " + ", ".join(f"{entry.name} (pid {entry.pid})" for entry in left))
    out.print(f"stopped {len(alive)} processes from {data}: " + ", ".join(sorted({c.entry.role for c in alive})))
