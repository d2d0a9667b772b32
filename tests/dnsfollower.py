"""A client that follows DNS, as a browser behind a well-behaved resolver does: for end-to-end tests.

How: :class:`DnsFollower` runs one loop on a thread of its own. It asks our real DNS for an A record of a
name (with an EDNS Client Subnet, so it poses as a user of that network), keeps the answer for the TTL the
answer carries (never longer, never shorter), and meanwhile sends HTTP GETs to the address it holds, each
on a fresh connection (a keep-alive connection would hide a listener that went away). Every request is a
:class:`Fetch` in :attr:`DnsFollower.fetches`: when, which address, and the failure if any (a DNS timeout,
an empty answer, a refused connection, a status other than 200 are all failures; DNS is tried three times
and HTTP waits 10 s, so a slow, loaded machine is no failure).

Bounded: the loop stops after ``max_seconds`` or ``max_fetches``, whichever comes first, or at
:meth:`DnsFollower.stop`. Why a thread and not asyncio: the tests around it are synchronous, and the
loop must keep its pace while the test blocks in ``wait_until``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import httpx


@dataclass(frozen=True)
class Fetch:
    """One GET of the loop: when (wall clock, to compare with Events), to which address, and why it failed
    (None: a 200)."""

    at: float
    address: str | None
    error: str | None


@dataclass(frozen=True)
class Target:
    """What the client asks for: ``name`` from the DNS at ``dns_port`` as a user of ``subnet``/24, then
    ``http://<answer>:<http_port><path>`` with ``Host: host``."""

    name: str
    dns_port: int
    subnet: str
    http_port: int
    host: str
    path: str


class DnsFollower:
    """The loop of the module docstring; :meth:`start`, then read :attr:`fetches` and :attr:`resolutions`."""

    def __init__(
        self, target: Target, *, interval: float = 0.05, max_seconds: float = 120.0, max_fetches: int = 5000
    ) -> None:
        self.target, self.interval = target, interval
        self.max_seconds, self.max_fetches = max_seconds, max_fetches
        self.fetches: list[Fetch] = []
        self.resolutions = 0
        """DNS answers received so far (each one held for its TTL)."""
        self.ttls: set[int] = set()
        self.answers: list[tuple[float, str | None]] = []
        """Each DNS answer: when (wall clock) and the address it gave (None: none)."""
        self._stop = threading.Event()
        self._resolved = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="dns-follower", daemon=True)

    def start(self) -> DnsFollower:
        self._thread.start()
        return self

    def stop(self) -> list[Fetch]:
        """Stop the loop and wait for it; every fetch it made."""
        self._stop.set()
        self._thread.join(timeout=30)
        return list(self.fetches)

    def wait_fresh_answer(self, timeout: float = 10.0) -> None:
        """Block until the loop got its next DNS answer (so it holds it for a whole TTL from now)."""
        with self._resolved:
            seen = self.resolutions
            if not self._resolved.wait_for(lambda: self.resolutions > seen, timeout):
                raise AssertionError(f"the DNS-following client got no new answer in {timeout} s")

    def failures(self) -> list[Fetch]:
        return [fetch for fetch in self.fetches if fetch.error is not None]

    def addresses(self) -> list[str | None]:
        """The addresses fetched from, consecutive repeats collapsed: ``[nyc, sfo, nyc]`` for a round trip."""
        runs: list[str | None] = []
        for fetch in self.fetches:
            if not runs or runs[-1] != fetch.address:
                runs.append(fetch.address)
        return runs

    def _run(self) -> None:
        started = time.monotonic()
        address: str | None = None
        expires = 0.0
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not self._stop.is_set() and len(self.fetches) < self.max_fetches:
                now = time.monotonic()
                if now - started > self.max_seconds:
                    break
                error: str | None = None
                if now >= expires:
                    address, expires, error = self._resolve()
                if error is None:
                    error = self._get(http, address)
                self.fetches.append(Fetch(time.time(), address, error))
                self._stop.wait(self.interval)

    def _resolve(self) -> tuple[str | None, float, str | None]:
        """(address, monotonic expiry, error): the first A record and its TTL."""
        target = self.target
        query = dns.message.make_query(target.name, "A", use_edns=0, options=[dns.edns.ECSOption(target.subnet, 24)])
        try:
            reply = self._ask(query)
        except (dns.exception.DNSException, OSError) as exc:
            return None, 0.0, f"dns: {exc!r}"
        records = [rrset for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A]
        received = time.monotonic()
        with self._resolved:
            self.resolutions += 1
            self._resolved.notify_all()
        if not records:
            return None, 0.0, f"dns: no A record for {target.name} (rcode {reply.rcode()})"
        self.ttls.add(records[0].ttl)
        address = sorted(item.address for item in records[0])[0]
        self.answers.append((time.time(), address))
        return address, received + records[0].ttl, None

    def _ask(self, query: dns.message.Message) -> dns.message.Message:
        """Over UDP, tried 3 times 1 s apart as a stub resolver does (a loaded machine is no failure of ours)."""
        for attempt in range(3):
            try:
                return dns.query.udp(query, "127.0.0.1", port=self.target.dns_port, timeout=1)
            except dns.exception.Timeout:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _get(self, http: httpx.Client, address: str | None) -> str | None:
        target = self.target
        try:
            response = http.get(f"http://{address}:{target.http_port}{target.path}", headers={"Host": target.host})
        except httpx.HTTPError as exc:
            return f"http {address}: {exc!r}"
        return None if response.status_code == 200 else f"http {address}: status {response.status_code}"
