"""The agent's link to the cloud: one WebSocket to one of several hub replicas, redialled with jitter.

How: a thin asyncio shell around :class:`edgefleet.sync.agent.AgentSession`.
Each connection sends ``hello`` built from the local view store, feeds every
frame to the session, commits batches to the local store *before* acking
them (the session queues the ack when told the batch is applied), and sends
whatever the session has to send. Status reports and log replies go through
the same session.

Why this shape: everything protocol-related is decided in ``sync`` and
tested without sockets; this module only moves bytes and chooses where and
when to dial.

Where to dial
=============
The client holds a list of *servers*: base URLs ``http(s)://host:port``
(the form ``edgefleet edge join --server`` takes; the WebSocket is
``ws(s)://host:port/edge/v1/sync``), replaced at run time by
:meth:`HubClient.set_servers` (the agent follows the ClusterInfo of its
view, see :mod:`edgefleet.api.clusterinfo`). Replacing the list never drops
the current connection; the next dial uses the new list.

A *target* is one place to dial. A server whose host is an IP address is one
target; a server whose host is a DNS name is resolved (``getaddrinfo``, A
and AAAA) before every round and each address is a target, dialled at that
address with the URL's host name kept in the ``Host`` header and for TLS
(SNI and certificate checks). So ``--server https://hub.example:7440`` with
three A records spreads agents over three replicas and fails over between
them. (Behind an HTTP or SOCKS proxy from the environment the name is left
to the proxy.)

A *round* dials the targets one after the other until one accepts, in
random order, so that agents spread over the replicas instead of all taking
the first: every target is tried once, except those still cooling down after
a 503 (below). A round that connects nobody is followed by
``min(cap, base * 2**attempt)`` seconds scaled by a random factor in
[0.5, 1) ("equal jitter"), ``attempt`` counting failed rounds in a row, so a
cloud restart does not turn thousands of agents into a synchronized
reconnect storm; a session that was established resets it.

A plain reconnect (the session was lost: the replica died, restarted, or the
link failed) does *not* prefer the replica it was connected to; it tries it
*last*. Nothing is gained by going back: the digest handshake costs the same
on any replica (the view's content versions do not depend on the replica),
so there is no affinity to keep. The replica that just dropped the link is
the likeliest to be down (a blackholed one costs a whole ``open_timeout``),
and spreading a dead replica's agents at random over the others is what
balancing wants; a replica that comes back is filled again by the hubs'
rebalancing.

Hub signals
===========
- Close code 4000 (:data:`~edgefleet.sync.messages.CLOSE_REBALANCE`): the
  hub releases the session to even out its replicas' loads. The client
  redials after a short jitter (``release_delay``, 0.1-1 s; no backoff
  growth, nothing to recover from), first to the URL of the close reason
  ``rebalance <URL>`` if it is a valid http(s) base URL (taken even when it
  is not in the list: the hubs know their peers better than a stale list;
  a malformed hint is ignored), else to the others of its targets, the
  releasing one last. More than :data:`QUICK_RELEASES` releases in a row
  without a session that settled fall back to the backoff (two replicas that
  keep handing an agent back and forth must not spin it).
- HTTP 503 (:data:`~edgefleet.sync.messages.OVERLOADED_STATUS`) on the
  upgrade: that replica is over its limits. It is not dialled again before
  its ``Retry-After`` (seconds or an HTTP date; :data:`DEFAULT_RETRY_AFTER`
  when missing, at most ``retry_after_cap``) has passed, plus a random half
  of it so the refused agents do not come back together; the round goes on
  with the other targets. When every target is cooling down the client
  sleeps until the first may be dialled.
- HTTP 401/403: the credential was revoked or is wrong; logged as an error
  with what to do, and the backoff jumps to its long end.

A silent partition (blackhole) is detected by WebSocket pings
(``ping_interval`` / ``ping_timeout``), not by TCP, which could take minutes.

TLS
===
With a :class:`~edgefleet.tls.ClientTrust` (the agent passes the CA that
``edge join`` pinned), ``wss://`` dials check the hub's certificate against
that CA alone, for the URL's host name (also when dialling a resolved
address). A certificate it did not sign (a man in the middle, a TLS
terminating proxy, a cloud with another CA) fails the dial: logged as an
error that says so, and the next target is tried; nothing is sent, not even
the credential. Unless the trust allows cleartext (``--insecure``),
``http://`` servers are refused in the list (ValueError) and ignored as
rebalance hints: a hub cannot downgrade an agent to cleartext.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import logging
import math
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from edgefleet.api.clusterinfo import check_server_url, normalise_servers
from edgefleet.edge.backoff import HUB_DIAL, Backoff
from edgefleet.sync import messages
from edgefleet.sync.agent import AgentSession, ApplyBatch, LocalState, LogsRequested, MetricsRequested, Welcomed
from edgefleet.sync.errors import ProtocolError
from edgefleet.tls import ClientTrust, TlsError, describe_verify_failure

log = logging.getLogger("edgefleet.edge.hub")

REPORT_SPACING = 0.25
"""Seconds between two status reports at least: a burst of changes (a workload restarting: stopping,
starting, ready) goes out in a few reports, and a rollout learns of readiness without waiting a second
(the hub decides what reaches the store: cloud.statuswrites)."""

SYNC_PATH = "/edge/v1/sync"
DEFAULT_RETRY_AFTER = 5.0
"""Seconds a replica that answered 503 without a usable Retry-After is left alone."""
QUICK_RELEASES = 3
"""Releases in a row (no settled session in between) redialled after the short release delay."""
SETTLED_SECONDS = 5.0
"""A session that lasted this long counts as settled: releases in a row start again from zero."""


def sync_url(server: str) -> str:
    """``http(s)://host:port`` -> ``ws(s)://host:port/edge/v1/sync``."""
    scheme, _, rest = server.partition("://")
    return ("wss" if scheme.lower() == "https" else "ws") + "://" + rest.rstrip("/") + SYNC_PATH


def rebalance_hint(reason: str) -> str | None:
    """The server URL in a close reason ``rebalance <URL>``; None when absent or malformed."""
    word, _, rest = reason.strip().partition(" ")
    if word != messages.CLOSE_REBALANCE_REASON or not rest.strip():
        return None
    try:
        return check_server_url(rest.strip())
    except ValueError:
        return None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP date) in seconds from now; None if unusable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True, slots=True)
class Target:
    """One place to dial: a server URL and the address its host resolved to (None: dial the URL's host)."""

    server: str
    address: str | None = None
    port: int = 0

    def __str__(self) -> str:
        return self.server if self.address is None else f"{self.server} ({self.address})"


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> its addresses (IPv4 and IPv6), in any order; OSError when it does not resolve."""


async def resolve_host(host: str, port: int) -> list[str]:
    """The system resolver (``getaddrinfo``): every A and AAAA address of ``host``, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    families = (socket.AF_INET, socket.AF_INET6)
    return list(dict.fromkeys(str(info[4][0]) for info in infos if info[0] in families))


class LinkHandler(Protocol):
    """What the hub client needs from the agent (implemented by :class:`edgefleet.edge.agent.Agent`)."""

    def local_state(self) -> LocalState: ...

    async def apply_batch(self, batch: ApplyBatch) -> None: ...

    def status_report(self) -> dict[str, Any]: ...

    async def read_logs(self, workload: str, tail: int) -> str: ...

    def link_changed(self, connected: bool, hub: str) -> None: ...


@dataclass(slots=True)
class _Dial:
    """How one dial ended (when it did not raise)."""

    welcomed: bool = False
    released: bool = False
    hint: str | None = None
    error: str = ""
    started: float = 0.0


class HubClient:
    """The agent's hub link over a list of servers (see the module docstring)."""

    def __init__(
        self,
        *,
        servers: Sequence[str],
        credential: Callable[[], str],
        node_name: str,
        handler: LinkHandler,
        heartbeat_seconds: float = 10.0,
        ping_interval: float = 10.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        open_timeout: float = 10.0,
        release_delay: tuple[float, float] = (0.1, 1.0),
        retry_after_cap: float = 120.0,
        resolver: Resolver = resolve_host,
        trust: ClientTrust | None = None,
        metrics: Callable[[str, int], Awaitable[str]] | None = None,
    ) -> None:
        """``trust``: how servers are checked (see TLS in the module docstring); None: system CAs, any scheme.

        ``metrics(target, max_bytes)``: the Prometheus text of a local target, for the cloud's metrics
        relay (its hello then names the feature); None: the relay skips this node.
        """
        self._metrics = metrics
        self._trust = trust
        self._ssl = trust.ssl_context() if trust is not None else None
        self._servers = self._admissible(servers)
        self._credential = credential
        self.node_name = node_name
        self._handler = handler
        self.heartbeat_seconds = heartbeat_seconds
        self._ping_interval = ping_interval
        self._backoff = backoff or HUB_DIAL
        self._rng = rng or random.Random()
        self._open_timeout = open_timeout
        self._release_delay = release_delay
        self._retry_after_cap = retry_after_cap
        self._resolver = resolver
        self._status_dirty = asyncio.Event()
        self.connected = False
        self.server = ""
        """Base URL of the server of the current session ("" while disconnected)."""
        self.connects = 0
        self.releases = 0
        self.objects_received = 0
        self._background: set[asyncio.Task[None]] = set()
        self._cooling: dict[Target, float] = {}  # target -> monotonic time before which it is not dialled
        self._first: str | None = None  # a rebalance hint: dial this server first in the next round
        self._last: Target | None = None  # dial this target last in the next round
        self._releases_in_a_row = 0

    @property
    def servers(self) -> list[str]:
        """The current server list (a copy)."""
        return list(self._servers)

    def set_servers(self, servers: Sequence[str]) -> bool:
        """Replace the server list (validated; ValueError if empty or invalid); True if it changed.

        The current connection is kept: only the next dial uses the new list.
        """
        new = self._admissible(servers)
        if new == self._servers:
            return False
        self._servers = new
        self._cooling = {t: until for t, until in self._cooling.items() if t.server in new}
        return True

    def _admissible(self, servers: Sequence[str]) -> list[str]:
        """Normalised, and checked against the trust (ValueError for a cleartext URL it does not allow)."""
        listed = normalise_servers(servers)
        if self._trust is not None:
            for server in listed:
                try:
                    self._trust.check_url(server, how="`edgefleet edge join --insecure`")
                except TlsError as exc:
                    raise ValueError(str(exc)) from None
        return listed

    def _hint_allowed(self, hint: str | None) -> str | None:
        """A rebalance hint, unless it would take this agent to cleartext."""
        if hint is None or self._trust is None or self._trust.insecure or not hint.lower().startswith("http://"):
            return hint
        log.error("ignoring the hub's rebalance hint %s: cleartext, and this node requires TLS", hint)
        return None

    def status_changed(self) -> None:
        """Ask for a status report soon (coalesced: many changes, one message)."""
        self._status_dirty.set()

    # --- dialling -----------------------------------------------------------

    async def run(self) -> None:
        """Dial, serve, redial: forever (cancel to stop)."""
        attempt = 0
        while True:
            try:
                outcome, wait = await self._round()
            except Exception:  # a bug here must not end the link for good: log it, back off, dial again
                log.exception("hub dialling round failed")
                outcome, wait = "failed", 0.0
            if outcome == "released":
                self._releases_in_a_row += 1
                if self._releases_in_a_row <= QUICK_RELEASES:
                    delay = self._rng.uniform(*self._release_delay)
                else:
                    delay = self._backoff.delay(self._releases_in_a_row - QUICK_RELEASES, self._rng.random)
                attempt = 0
            elif outcome == "ended":
                delay = self._backoff.delay(0, self._rng.random)
                attempt = 0
            else:
                if outcome == "refused":
                    attempt = max(attempt, 6)
                delay = self._backoff.delay(attempt, self._rng.random)
                attempt += 1
            await asyncio.sleep(max(delay, wait))

    async def _round(self) -> tuple[str, float]:
        """Dial targets until one accepts: (how it ended, the least time to wait before the next round).

        Outcomes: ``released`` (close code 4000), ``ended`` (a session was
        established, then lost), ``refused`` (nobody accepted and a replica
        refused the credential), ``failed`` (nobody accepted).
        """
        first, self._first = self._first, None
        last, self._last = self._last, None
        targets = await self._targets(first, last)
        now = time.monotonic()
        self._cooling = {t: until for t, until in self._cooling.items() if until > now}
        ready = [t for t in targets if self._cooling.get(t, 0.0) <= now]
        if targets and not ready:
            wait = min(self._cooling[t] for t in targets) - now
            log.warning("every hub server is overloaded; dialling again in %.1f s", wait)
            return "failed", wait
        refused = False
        for target in ready:
            try:
                dial = await self._connect_once(target)
            except InvalidStatus as exc:
                refused = self._refused(target, exc) or refused
                continue
            except ssl.SSLCertVerificationError as exc:
                log.error("%s", describe_verify_failure(str(target), exc))
                continue
            except (OSError, WebSocketException, TimeoutError, ProtocolError) as exc:
                log.warning("cannot connect to the hub at %s: %s", target, exc or exc.__class__.__name__)
                continue
            if time.monotonic() - dial.started >= SETTLED_SECONDS:
                self._releases_in_a_row = 0
            if dial.released:
                self.releases += 1
                self._first = self._hint_allowed(dial.hint)
                self._last = target
                where = f"; dialling {dial.hint} next" if dial.hint else ""
                log.info("the hub at %s released the session to rebalance%s", target, where)
                return "released", 0.0
            if dial.welcomed:
                self._last = target
                log.warning("hub link to %s down: %s", target, dial.error or "closed")
                return "ended", 0.0
            log.warning("the hub at %s closed the connection before the handshake", target)
        if not targets:
            log.warning("no hub server address could be resolved: %s", ", ".join(self._servers))
        return ("refused" if refused else "failed"), 0.0

    def _refused(self, target: Target, exc: InvalidStatus) -> bool:
        """Note an HTTP refusal of the upgrade; True when it refused the credential."""
        code = exc.response.status_code
        if code == messages.OVERLOADED_STATUS:
            after = retry_after_seconds(exc.response.headers.get("Retry-After"))
            capped = min(DEFAULT_RETRY_AFTER if after is None else after, self._retry_after_cap)
            wait = capped * (1 + self._rng.random() / 2)
            self._cooling[target] = time.monotonic() + wait
            log.warning("the hub at %s is overloaded (HTTP %d); not dialling it again for %.1f s", target, code, wait)
            return False
        if code in (401, 403):
            log.error(
                "the hub at %s refused the connection: HTTP %s; the credential was revoked or is wrong: "
                "run `edgefleet edge join --force`",
                target,
                code,
            )
            return True
        log.warning("the hub at %s refused the connection: HTTP %s", target, code)
        return False

    async def _targets(self, first: str | None, last: Target | None) -> list[Target]:
        """This round's targets in dialling order: the hint's, the others at random, ``last`` last."""
        servers = [s for s in self._servers if s != first]
        resolved = await asyncio.gather(*(self._resolve(s) for s in [*([first] if first else []), *servers]))
        head: list[Target] = list(resolved[0]) if first else []
        rest = [t for group in (resolved[1:] if first else resolved) for t in group if t not in head]
        self._rng.shuffle(head)
        self._rng.shuffle(rest)
        ordered = head + [t for t in rest if t != last]
        if last is not None and last in rest:
            ordered.append(last)
        return ordered

    async def _resolve(self, server: str) -> list[Target]:
        """The server as targets: itself for an IP host (or behind a proxy), else one per address."""
        parts = urlsplit(server)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return []
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return [Target(server)]
        if _proxied(server):
            return [Target(server)]
        try:
            addresses = await asyncio.wait_for(self._resolver(host, port), timeout=self._open_timeout)
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: UnicodeError of an IDNA name
            log.warning("cannot resolve hub server %s: %s", server, exc or exc.__class__.__name__)
            return []
        return [Target(server, address, port) for address in dict.fromkeys(addresses)]

    # --- one connection -------------------------------------------------------

    async def _connect_once(self, target: Target) -> _Dial:
        """Dial ``target`` and serve the session; raises only when it failed before the hub's welcome."""
        dial = _Dial(started=time.monotonic())
        headers = {"Authorization": f"Bearer {self._credential()}", messages.COMPRESSION_HEADER: "zlib"}
        where: dict[str, Any] = {} if target.address is None else {"host": target.address, "port": target.port}
        if self._ssl is not None and target.server.lower().startswith("https://"):
            where["ssl"] = self._ssl
        try:
            async with connect(
                sync_url(target.server),
                additional_headers=headers,
                max_size=messages.MAX_CLOUD_MESSAGE_BYTES,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_interval * 2,
                compression=None,  # no per-connection deflate context: large frames come compressed one by one
                open_timeout=self._open_timeout,
                close_timeout=2,
                **where,
            ) as ws:
                features = (messages.FEATURE_METRICS,) if self._metrics is not None else ()
                session = AgentSession(self.node_name, local=self._handler.local_state(), features=features)
                await ws.send(session.hello())
                try:
                    await self._serve(ws, session, target, dial)
                finally:
                    if self.connected:
                        self.connected = False
                        self.server = ""
                        self._handler.link_changed(False, "")
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == messages.CLOSE_REBALANCE:
                dial.released = True
                dial.hint = rebalance_hint(exc.rcvd.reason)
                return dial
            if not dial.welcomed:
                raise
            dial.error = str(exc)
        except (OSError, WebSocketException, TimeoutError, ProtocolError) as exc:
            if not dial.welcomed:
                raise
            dial.error = str(exc) or exc.__class__.__name__
        return dial

    async def _serve(self, ws: ClientConnection, session: AgentSession, target: Target, dial: _Dial) -> None:
        reporter = asyncio.create_task(self._report_loop(ws, session))
        try:
            async for frame in ws:
                await self._on_frame(ws, session, target, dial, frame)
                del frame  # up to 8 MiB: not kept alive while the link is idle (nor, in _on_frame, its batch)
        finally:
            reporter.cancel()

    async def _on_frame(
        self, ws: ClientConnection, session: AgentSession, target: Target, dial: _Dial, frame: str | bytes
    ) -> None:
        text = frame if isinstance(frame, str) else messages.decompress_frame(frame)  # it asked for zlib frames
        for event in session.receive(text):
            if isinstance(event, Welcomed):
                dial.welcomed = True
                self.server = target.server
            await self._handle(ws, session, event)
        await self._flush(ws, session)

    async def _handle(self, ws: ClientConnection, session: AgentSession, event: object) -> None:
        if isinstance(event, Welcomed):
            self.connected = True
            self.connects += 1
            self.heartbeat_seconds = event.heartbeat_seconds or self.heartbeat_seconds
            self._handler.link_changed(True, event.hub)
            self._status_dirty.set()
        elif isinstance(event, ApplyBatch):
            await self._handler.apply_batch(event)
            self.objects_received += len(event.put) + len(event.delete)
            session.applied(event.seq)
        elif isinstance(event, LogsRequested):
            task = asyncio.create_task(self._answer_logs(ws, session, event))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif isinstance(event, MetricsRequested):
            task = asyncio.create_task(self._answer_metrics(ws, session, event))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _answer_logs(self, ws: ClientConnection, session: AgentSession, event: LogsRequested) -> None:
        try:
            session.logs_reply(event.id, await self._handler.read_logs(event.workload, event.tail), None)
        except Exception as exc:  # a logs failure must never take the link down
            session.logs_reply(event.id, "", f"cannot read logs of {event.workload!r}: {exc}")
        await self._flush(ws, session)

    async def _answer_metrics(self, ws: ClientConnection, session: AgentSession, event: MetricsRequested) -> None:
        assert self._metrics is not None  # the hello named the feature only with a source
        try:
            session.metrics_reply(event.id, await self._metrics(event.target, event.max_bytes), None)
        except Exception as exc:  # a scrape failure must never take the link down
            session.metrics_reply(event.id, "", f"cannot read the metrics of {event.target!r}: {exc}")
        with contextlib.suppress(ConnectionClosed):
            await self._flush(ws, session)

    async def _report_loop(self, ws: ClientConnection, session: AgentSession) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_seconds):  # no extra task per wait, unlike wait_for
                    await self._status_dirty.wait()
            self._status_dirty.clear()
            if self.connected:
                try:
                    session.report_status(self._handler.status_report())
                except ValueError as exc:  # over a bound the hub enforces: it would close the link, so skip it
                    log.error("status report not sent (the cloud would refuse it): %s", exc)
                await self._flush(ws, session)
            await asyncio.sleep(min(REPORT_SPACING, self.heartbeat_seconds / 4))  # rate limit bursts of changes

    @staticmethod
    async def _flush(ws: ClientConnection, session: AgentSession) -> None:
        for message in session.data_to_send():
            await ws.send(message)


def _proxied(server: str) -> bool:
    """Whether websockets would dial ``server`` through a proxy from the environment (it resolves the name)."""
    try:
        from websockets.proxy import get_proxy
        from websockets.uri import parse_uri
    except ImportError:  # websockets < 15 has no proxy support
        return False
    return get_proxy(parse_uri(sync_url(server))) is not None
