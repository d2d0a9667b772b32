"""A man in the middle on the control channel: the agent, the join and the CLI refuse it.

The cloud is a real ``edgefleet cloud`` serving a certificate from CA A. The
man in the middle is a TLS-terminating proxy (:class:`TlsMitm`) with a
certificate for 127.0.0.1 from CA B, which relays everything to the real
cloud: were it trusted, every request would work, and it would read every
token. Each client is pinned to CA A (``--ca-hash`` of A, ``ca.crt`` in the
node's directory, ``EDGEFLEET_CA_FILE``) and must refuse it with an error
that says so, before sending any credential: the proxy records the plaintext
it received and the tests look for the tokens in it. Then the same node,
pointed at the real cloud, connects (so the refusal is the certificate's
doing). Cleartext ``http://`` needs an explicit ``--insecure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from edgefleet.edge.agent import AgentError, load_identity
from edgefleet.edge.hubclient import HubClient
from edgefleet.tls import ClientTrust, PkiFiles, ca_hash
from tests.cloudproc import EDGEFLEET, CloudProcess, make_pki, running_cloud
from tests.fleet import AgentProcess, site_doc
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

API = "/apis/edgefleet.io/v1"


class TlsMitm:
    """A TLS-terminating relay on 127.0.0.1 with its own certificate, forwarding to an upstream over TLS.

    ``received`` is the plaintext that clients sent it (what a real man in
    the middle would read).
    """

    def __init__(self, pki: PkiFiles, upstream_port: int, upstream_ca: Path) -> None:
        self.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.upstream_ctx = ssl.create_default_context(cafile=str(upstream_ca))
        self.upstream_port = upstream_port
        self.received = bytearray()
        self.handshakes_failed = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> TlsMitm:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self.server_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop.set_exception_handler(lambda loop, context: None)  # failed handshakes are the point

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port, ssl=self.upstream_ctx, server_hostname="127.0.0.1"
            )
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bool) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while chunk := await source.read(65536):
                    if record:
                        self.received.extend(chunk)
                    sink.write(chunk)
                    await sink.drain()
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[PkiFiles, PkiFiles]:
    root = tmp_path_factory.mktemp("pki")
    return make_pki(root / "a"), make_pki(root / "b")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, pki: tuple[PkiFiles, PkiFiles]) -> Iterator[CloudProcess]:
    root = tmp_path_factory.mktemp("cloud")
    with running_cloud(f"sqlite:///{root}/store.db", root, tls=pki[0]) as proc:
        with proc.client() as admin:
            assert admin.post(f"{API}/sites", json=site_doc("lab")).status_code == 201
        yield proc


@pytest.fixture
def mitm(cloud: CloudProcess, pki: tuple[PkiFiles, PkiFiles]) -> Iterator[TlsMitm]:
    proxy = TlsMitm(pki[1], cloud.port, pki[0].ca_cert).start()
    try:
        yield proxy
    finally:
        proxy.close()


def cli(cloud: CloudProcess, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "EDGEFLEET_SERVER": cloud.url,
        "EDGEFLEET_TOKEN": cloud.token,
        "EDGEFLEET_CONFIG": str(tmp_path / "cli.yaml"),
        "COLUMNS": "200",
        **env,
    }
    environment.pop("EDGEFLEET_INSECURE", None)
    return subprocess.run([EDGEFLEET, *args], capture_output=True, text=True, env=environment, timeout=60, check=False)


def bootstrap_token(cloud: CloudProcess) -> str:
    with cloud.client() as api:
        created = api.post("/edge/v1/bootstrap-tokens", json={"ttlSeconds": 600})
        assert created.status_code == 201, created.text
        return str(created.json()["token"])


def join(
    cloud: CloudProcess, tmp_path: Path, server: str, token: str, name: str, *trust: str
) -> subprocess.CompletedProcess[str]:
    return cli(
        cloud,
        tmp_path,
        "edge",
        "join",
        "--server",
        server,
        "--token",
        token,
        "--site",
        "lab",
        "--name",
        name,
        "--data-dir",
        str(tmp_path / name),
        *trust,
    )


def node_exists(cloud: CloudProcess, name: str) -> bool:
    with cloud.client() as api:
        return api.get(f"{API}/nodes/{name}").status_code == 200


def test_token_create_prints_a_join_command_that_pins_the_ca(
    cloud: CloudProcess, pki: tuple[PkiFiles, PkiFiles], tmp_path: Path
) -> None:
    assert cloud.tls is not None
    created = cli(cloud, tmp_path, "token", "create", "--ttl", "10m", EDGEFLEET_CA_FILE=str(cloud.tls.ca_cert))
    printed = " ".join(created.stderr.split())
    assert created.returncode == 0, printed
    assert f"--ca-hash {ca_hash(pki[0].ca_cert.read_bytes())}" in printed
    assert httpx.get(cloud.url + "/edge/v1/ca", verify=cloud.ssl_context()).content == pki[0].ca_cert.read_bytes()


def test_a_join_with_a_wrong_ca_hash_is_refused(
    cloud: CloudProcess, pki: tuple[PkiFiles, PkiFiles], tmp_path: Path
) -> None:
    token = bootstrap_token(cloud)
    refused = join(cloud, tmp_path, cloud.url, token, "wrong-hash", "--ca-hash", ca_hash(pki[1].ca_cert.read_bytes()))
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "not --ca-hash" in message and "refusing to join" in message, message
    assert not (tmp_path / "wrong-hash" / "credential").exists()
    assert not node_exists(cloud, "wrong-hash")
    unpinned = join(cloud, tmp_path, cloud.url, token, "unpinned")
    assert unpinned.returncode == 1 and "--ca-hash" in unpinned.stderr, unpinned.stderr


def test_a_join_through_a_tls_terminating_proxy_is_refused_before_the_token_leaves(
    cloud: CloudProcess, pki: tuple[PkiFiles, PkiFiles], mitm: TlsMitm, tmp_path: Path
) -> None:
    token = bootstrap_token(cloud)
    pin = ca_hash(pki[0].ca_cert.read_bytes())  # the right pin: the proxy relays the real CA
    refused = join(cloud, tmp_path, mitm.url, token, "via-mitm", "--ca-hash", pin)
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "did not sign" in message, message
    assert token.encode() not in mitm.received and token.split(".")[1].encode() not in mitm.received
    assert not node_exists(cloud, "via-mitm")


def test_an_agent_pinned_to_ca_a_refuses_the_proxy_and_connects_to_the_real_cloud(
    cloud: CloudProcess, pki: tuple[PkiFiles, PkiFiles], mitm: TlsMitm, tmp_path: Path
) -> None:
    token = bootstrap_token(cloud)
    joined = join(cloud, tmp_path, cloud.url, token, "edge-1", "--ca-hash", ca_hash(pki[0].ca_cert.read_bytes()))
    assert joined.returncode == 0, joined.stderr
    data_dir = tmp_path / "edge-1"
    assert (data_dir / "ca.crt").read_bytes() == pki[0].ca_cert.read_bytes()
    credential = (data_dir / "credential").read_text().strip()
    real = yaml.safe_load((data_dir / "node.yaml").read_text())
    assert "insecure" not in real
    (data_dir / "node.yaml").write_text(yaml.safe_dump({**real, "server": mitm.url, "servers": [mitm.url]}))

    agent = AgentProcess("edge-1", "lab", data_dir).start()
    try:
        wait_until(lambda: "did not sign" in agent.log(), 20, what="the agent to refuse the proxy's certificate")
        assert agent.status()["connected"] is False
        assert credential.encode() not in mitm.received and b"Authorization" not in mitm.received
        assert not node_phase_ready(cloud, "edge-1")
    finally:
        agent.stop()

    (data_dir / "node.yaml").write_text(yaml.safe_dump(real))
    agent = AgentProcess("edge-1", "lab", data_dir).start()
    try:
        wait_until(lambda: node_phase_ready(cloud, "edge-1"), 30, what="the agent to connect to the real cloud")
    finally:
        agent.stop()


def node_phase_ready(cloud: CloudProcess, name: str) -> bool:
    with cloud.client() as api:
        return bool((api.get(f"{API}/nodes/{name}").json().get("status") or {}).get("phase") == "Ready")


def test_the_cli_refuses_the_proxy_and_cleartext(cloud: CloudProcess, mitm: TlsMitm, tmp_path: Path) -> None:
    assert cloud.tls is not None
    refused = cli(cloud, tmp_path, "get", "sites", EDGEFLEET_SERVER=mitm.url, EDGEFLEET_CA_FILE=str(cloud.tls.ca_cert))
    assert refused.returncode == 1 and "did not sign" in " ".join(refused.stderr.split()), refused.stderr
    assert cloud.token.encode() not in mitm.received and b"Authorization" not in mitm.received
    unknown_ca = cli(cloud, tmp_path, "get", "sites")  # the system's CAs do not know the fleet's own CA
    assert unknown_ca.returncode == 1 and "did not sign" in " ".join(unknown_ca.stderr.split())

    cleartext = cli(cloud, tmp_path, "get", "sites", EDGEFLEET_SERVER=f"http://127.0.0.1:{cloud.port}")
    message = " ".join(cleartext.stderr.split())
    assert cleartext.returncode == 1 and "cleartext" in message and "EDGEFLEET_INSECURE=1" in message, message
    token = bootstrap_token(cloud)
    join_cleartext = join(cloud, tmp_path, f"http://127.0.0.1:{cloud.port}", token, "clear")
    message = " ".join(join_cleartext.stderr.split())
    assert join_cleartext.returncode == 1 and "cleartext" in message and "--insecure" in message, message


# -- without processes -------------------------------------------------------------------------


def test_an_agent_refuses_a_cleartext_node_yaml_unless_join_allowed_it(tmp_path: Path) -> None:
    (tmp_path / "credential").write_text("abcdef." + "0" * 32 + "\n")
    (tmp_path / "node.yaml").write_text("servers: [http://cloud:7440]\nnode: edge-1\nsite: par\n")
    with pytest.raises(AgentError, match=r"cleartext.*--insecure"):
        load_identity(tmp_path)
    (tmp_path / "node.yaml").write_text("servers: [http://cloud:7440]\nnode: edge-1\nsite: par\ninsecure: true\n")
    assert load_identity(tmp_path).insecure


async def test_a_hub_cannot_downgrade_a_tls_agent_to_cleartext() -> None:
    class Nothing:
        pass

    client = HubClient(
        servers=["https://hub-a:7440"],
        credential=lambda: "x",
        node_name="edge-1",
        handler=Nothing(),  # type: ignore[arg-type]
        trust=ClientTrust(),
    )
    with pytest.raises(ValueError, match="cleartext"):
        client.set_servers(["http://hub-b:7440"])
    assert client.servers == ["https://hub-a:7440"]
    assert client._hint_allowed("http://hub-b:7440") is None
    assert client._hint_allowed("https://hub-b:7440") == "https://hub-b:7440"
    with pytest.raises(ValueError, match="cleartext"):
        HubClient(
            servers=["http://hub-a:7440"],
            credential=lambda: "x",
            node_name="edge-1",
            handler=Nothing(),  # type: ignore[arg-type]
            trust=ClientTrust(),
        )
    allowed = HubClient(
        servers=["http://hub-a:7440"],
        credential=lambda: "x",
        node_name="edge-1",
        handler=Nothing(),  # type: ignore[arg-type]
        trust=ClientTrust(insecure=True),
    )
    assert allowed._hint_allowed("http://hub-b:7440") == "http://hub-b:7440"
