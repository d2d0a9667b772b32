"""Crafted DNS queries for the adversarial tests and ``bench/dns_attack.py``.

How the pointer-chain query of issue 12 is built: after a well-formed
question, a first additional record carries in its RDATA (which a parser
skips) a chain of compression pointers, each pointing at the one before it,
ending at a root label; then as many records as fit, each owned by a pointer
to the last link of the chain and with empty RDATA. Every pointer points
backwards, so a parser that only checks "backwards" follows the whole chain
once per record: work grows with (chain length x records), about the square
of the message size. Pointers can only reach the first 16 KiB of a message,
so a 64 KiB TCP message has a chain in its first 16 KiB and records after it.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import httpx

_HEADER = struct.Struct(">HHHHHH")
_RR_FIXED = struct.Struct(">HHIH")
QUESTION = b"\x04demo\x03cdn\x09edgefleet\x04test\x00" + struct.pack(">HH", 1, 1)
_RECORD_SIZE = 12  # a two-byte pointer owner, then type, class, TTL, RDLENGTH 0


def pointer_chain_query(size: int, variant: int = 0, query_id: int = 0x1234) -> bytes:
    """A query of about ``size`` bytes whose additional section costs O(size^2) to walk naively.

    ``variant`` (0-255) changes one byte of the skipped RDATA, so two variants
    have different bytes (no answer cache helps) and parse the same way.
    """
    question_end = 12 + len(QUESTION)
    first_rdata = question_end + 11  # the first record: root owner (1 byte), then 10 fixed bytes
    budget = size - first_rdata
    chain_bytes = min(budget // 2, 0x3FFF - first_rdata - 2) & ~1
    links = chain_bytes // 2
    chain = bytearray(b"\x00" + bytes((variant & 0xFF,)))  # root label, then the varied byte
    for link in range(1, links):
        chain += struct.pack(">H", 0xC000 | (first_rdata + 2 * (link - 1)))
    last_link = first_rdata + 2 * (links - 1)
    records = (size - first_rdata - len(chain)) // _RECORD_SIZE
    owner = struct.pack(">H", 0xC000 | last_link)
    body = b"\x00" + _RR_FIXED.pack(1, 1, 0, len(chain)) + bytes(chain) + (owner + _RR_FIXED.pack(1, 1, 0, 0)) * records
    return _HEADER.pack(query_id, 0, 1, 0, 0, records + 1) + QUESTION + body


@dataclass
class AttackFigures:
    """Latencies (seconds) seen by legitimate clients while crafted queries were sent."""

    sent: int
    healthz: list[float] = field(default_factory=list)
    dns: list[float] = field(default_factory=list)
    dns_lost: int = 0

    @staticmethod
    def p99(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else math.inf

    def summary(self) -> str:
        return (
            f"{self.sent} crafted queries; /healthz max {max(self.healthz, default=math.inf) * 1000:.0f} ms "
            f"p99 {self.p99(self.healthz) * 1000:.0f} ms over {len(self.healthz)}; legitimate DNS "
            f"p99 {self.p99(self.dns) * 1000:.0f} ms max {max(self.dns, default=math.inf) * 1000:.0f} ms "
            f"over {len(self.dns)}, {self.dns_lost} lost"
        )


def legitimate_query(query_id: int) -> bytes:
    """An ordinary A query without EDNS (answered from the packet cache after the first)."""
    return _HEADER.pack(query_id, 0x0100, 1, 0, 0, 0) + QUESTION


def attack_while_probing(
    api_url: str,
    dns_port: int,
    *,
    rate: float = 50.0,
    seconds: float = 3.0,
    size: int = 4096,
    tcp: bool = False,
    settle: float = 1.0,
) -> AttackFigures:
    """Send crafted queries at ``rate``/s for ``seconds`` while timing /healthz and legitimate DNS queries.

    Probing goes on for ``settle`` seconds after the last crafted query (a
    server that queued work answers late). Each probe waits at most 10 s.
    """
    stop = threading.Event()
    figures = AttackFigures(sent=0)
    probes = [
        threading.Thread(target=_probe_healthz, args=(api_url, stop, figures.healthz)),
        threading.Thread(target=_probe_dns, args=(dns_port, stop, figures)),
    ]
    for thread in probes:
        thread.start()
    try:
        figures.sent = _send_crafted(dns_port, rate, seconds, size, tcp)
        time.sleep(settle)
    finally:
        stop.set()
        for thread in probes:
            thread.join(timeout=15)
    return figures


def _send_crafted(dns_port: int, rate: float, seconds: float, size: int, tcp: bool) -> int:
    sent = 0
    start = time.monotonic()
    sockets: list[socket.socket] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            while (elapsed := time.monotonic() - start) < seconds:
                message = pointer_chain_query(size, sent % 256, query_id=sent & 0xFFFF)
                if tcp:
                    conn = socket.create_connection(("127.0.0.1", dns_port), timeout=2)
                    conn.sendall(len(message).to_bytes(2, "big") + message)
                    sockets.append(conn)
                else:
                    udp.sendto(message, ("127.0.0.1", dns_port))
                sent += 1
                time.sleep(max(0.0, sent / rate - elapsed))
    finally:
        for conn in sockets:
            conn.close()
    return sent


def _probe_healthz(api_url: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(timeout=10.0) as client:
        while not stop.is_set():
            began = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                client.get(api_url + "/healthz")
            latencies.append(time.monotonic() - began)
            stop.wait(0.05)


def _probe_dns(dns_port: int, stop: threading.Event, figures: AttackFigures) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10.0)
        query_id = 0
        while not stop.is_set():
            query_id = (query_id + 1) & 0xFFFF
            began = time.monotonic()
            sock.sendto(legitimate_query(query_id), ("127.0.0.1", dns_port))
            try:
                while True:  # skip late answers to earlier probes
                    reply = sock.recv(4096)
                    if reply[:2] == query_id.to_bytes(2, "big"):
                        break
                figures.dns.append(time.monotonic() - began)
            except TimeoutError:
                figures.dns_lost += 1
            stop.wait(0.05)
