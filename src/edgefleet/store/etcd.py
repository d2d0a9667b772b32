"""EtcdStore: the scale-out backend, on an etcd v3 cluster through aetcd.

How the interface maps onto etcd (one to one, by design of the interface):

* **Keys** live under a root prefix (``/edgefleet`` by default) that callers
  never see: ``/registry/sites/a`` is stored as ``/edgefleet/registry/sites/a``.
  Because keys always start with ``/`` (see ``keys``), a deployment's data is
  exactly the range under ``root + "/"``.
* **Writes** are single transactions: create = ``create_revision == 0`` then
  put; update = ``mod_revision == expected`` (or ``create_revision > 0``,
  "exists", when no revision is expected) then put with ``prev_kv``; delete
  likewise with a ``prev_kv`` delete. The revision comes from the
  transaction's header.
* **Reads** are linearizable ranges, at a revision and with a limit when asked.
* **Watches** are etcd watches from ``after_revision + 1`` with ``prev_kv`` (so
  deletions carry the last value) and ``progress_notify``. etcd sends a
  progress notification to an idle, caught-up watch every
  ``--experimental-watch-progress-notify-interval`` (server flag, default
  10 minutes; the tests use 250ms); each becomes a ``Progress``. Unlike
  SqliteStore, the interval is the server's, not a constructor argument.
  A slow consumer is handled by gRPC flow control (etcd buffers), so etcd
  watches never raise ``WatchTooSlow``. etcd deletes all keys of an expired
  or revoked lease in one revision, so those DELETE events share a revision.
* **Epoch**: the root key itself (``/edgefleet``, outside the caller's
  range) holds a UUID written once, if absent, when a store is opened; the
  epoch is ``<cluster id>-<uuid>``. A wiped or new cluster has no key, so it
  gets a new UUID; a cluster re-formed with another ``--initial-cluster-token``
  or other peer URLs gets a new cluster id. The cluster id alone is not
  enough: it is a hash of the token and peer URLs, so a fresh cluster with
  default flags, or a snapshot restored with the same flags, keeps it. The
  UUID alone is not enough either: a restored snapshot brings the old key
  back. So after ``etcdctl snapshot restore``, either restore with a new
  ``--initial-cluster-token`` or delete the root key (``etcdctl del
  /edgefleet``) before starting edgefleet: both yield a new epoch.

Several members (``etcd://h1:p1,h2:p2,h3:p3``): aetcd dials
``f"{host}:{port}"``, so we give it a gRPC multi-address target split at its
last colon (``ipv4:10.0.0.1:2379,10.0.0.2:2379`` + ``2379``) with the
``round_robin`` policy: calls spread over the live members and a dead member
is skipped. Every call uses ``wait_for_ready``, so a call made while a member
is down waits for a live one rather than failing. Host names are resolved
once, when the store is opened.

Failures and retries:

* Reads, lease keepalives, compaction and watches are retried on
  ``UNAVAILABLE``/``DEADLINE_EXCEEDED`` (a dead member, "leader changed",
  "no leader", a timed-out proposal) with jittered backoff for up to
  ``retry_timeout`` seconds, then raise ``Unavailable``. A broken watch is
  resumed from the revision after the last one it yielded.
* A write whose call failed that way may or may not have been applied. We
  retry the *same conditional transaction*: if the retry succeeds, the first
  attempt cannot have applied before it, since its condition was still true,
  nor after it, since it no longer is (an unconditional update could apply
  twice, with the same value). If the retry's condition fails we do not know
  whether our own first attempt is the cause, so we raise ``OutcomeUnknown``
  rather than ``AlreadyExists``/``Conflict``/``NotFound``; the same when
  ``retry_timeout`` runs out. A write is never reported as failed-without-
  effect unless etcd said so in a response.

Why aetcd's stubs rather than its helpers: aetcd's high-level calls cannot
range at a revision or with a limit, drop the transaction header (our
revision), drop progress notifications and take no ``wait_for_ready``. We use
its client for the channel and its generated stubs and messages for the
calls; no gRPC or protobuf code is written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import aetcd
import grpc
from aetcd import rpc

from edgefleet.store.interface import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    EventType,
    FutureRevision,
    InvalidStoreURL,
    KeyValue,
    Lease,
    LeaseNotFound,
    ListResult,
    NotFound,
    OutcomeUnknown,
    Progress,
    Store,
    StoreError,
    Unavailable,
)
from edgefleet.store.keys import check_key, check_prefix, prefix_end

WatchItems = list[Event | Progress]  # EtcdStore.list shadows the builtin in the class

DEFAULT_ROOT = "/edgefleet"

CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.lb_policy_name": "round_robin",
    # Detect a silently dead member; etcd accepts pings every >= 5s.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
    # Reconnect to a member that comes back within a couple of seconds.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 2_000,
    # Large unpaginated lists: etcd itself sends up to 2 GiB.
    "grpc.max_receive_message_length": 256 * 1024 * 1024,
}

_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

# etcd's "require leader" metadata: a member cut off from the leader fails
# calls at once (and ends watch streams) instead of stalling, so that we
# retry on another member.
REQUIRE_LEADER = (("hasleader", "true"),)

T = TypeVar("T")


class _HistoryCompacted(StoreError):
    """etcd said "compacted" without saying up to where; callers ask and raise Compacted."""


def parse_endpoints(spec: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"h1:p1,h2:p2"`` (or a list of ``"h:p"``) as (host, port) pairs; IPv6 as ``[::1]:p``."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    endpoints = []
    for part in parts:
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise InvalidStoreURL(f"bad etcd endpoint {part!r}: expected host:port")
        endpoints.append((host.strip("[]"), int(port)))
    if not endpoints:
        raise InvalidStoreURL("no etcd endpoint given")
    return endpoints


def grpc_target(endpoints: list[tuple[str, int]]) -> str:
    """A gRPC target naming every endpoint (resolved to IP addresses when several)."""
    if len(endpoints) == 1:
        host, port = endpoints[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    addresses = [_resolve(host, port) for host, port in endpoints]
    families = {family for family, _ in addresses}
    if families == {socket.AF_INET}:
        return "ipv4:" + ",".join(address for _, address in addresses)
    if families == {socket.AF_INET6}:
        return "ipv6:" + ",".join(address for _, address in addresses)
    raise InvalidStoreURL("etcd endpoints mix IPv4 and IPv6 addresses; use one family")


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unavailable(f"cannot resolve etcd host {host!r}: {exc}") from exc
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first
    family, address = infos[0][0], str(infos[0][4][0])
    return family, (f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}")


class _Backoff:
    """Jittered exponential backoff within a time budget."""

    def __init__(self, budget: float) -> None:
        self._deadline = time.monotonic() + budget
        self._delay = 0.05

    async def wait(self) -> bool:
        """Sleep before the next attempt; False (no sleep) when the budget is spent."""
        if time.monotonic() + self._delay > self._deadline:
            return False
        await asyncio.sleep(self._delay * random.uniform(0.5, 1.0))
        self._delay = min(self._delay * 2, 1.0)
        return True


def _transient(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() in _TRANSIENT


def _error(exc: grpc.aio.AioRpcError) -> StoreError:
    """The StoreError for an etcd error status."""
    details = exc.details() or ""
    if _transient(exc):
        return Unavailable(f"etcd unavailable ({exc.code().name}): {details}")
    if "lease not found" in details:
        return LeaseNotFound(details)
    if "future revision" in details:
        return FutureRevision(details)
    if "compacted" in details:
        return _HistoryCompacted(details)
    return StoreError(f"etcd error ({exc.code().name}): {details}")


def _compare(key: bytes, target: str, result: str, value: int) -> Any:
    """A Compare on ``create_revision`` (target "CREATE") or ``mod_revision`` ("MOD")."""
    field = "create_revision" if target == "CREATE" else "mod_revision"
    return rpc.Compare(
        key=key, target=getattr(rpc.Compare, target), result=getattr(rpc.Compare, result), **{field: value}
    )


def _kv(key: str, pb: Any) -> KeyValue:
    return KeyValue(key, pb.value, pb.create_revision, pb.mod_revision, pb.version, pb.lease)


class EtcdStore(Store):
    """A revisioned key-value store on etcd v3.

    ``endpoints``: ``"host:port[,host:port...]"`` or a list of ``"host:port"``.
    ``root``: the key prefix of this deployment (callers never see it).
    ``timeout``: seconds per etcd call. ``retry_timeout``: seconds a call
    keeps retrying a transient failure. ``connect_timeout``: seconds to reach
    the cluster when opening.

    Opening contacts the cluster (blocking, up to ``connect_timeout``) to read
    or create the epoch, so that ``epoch`` is valid from the start.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = "127.0.0.1:2379",
        *,
        root: str = DEFAULT_ROOT,
        timeout: float = 5.0,
        retry_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        root = root.rstrip("/")
        if not root.startswith("/"):
            raise InvalidStoreURL(f"etcd root prefix {root!r} must be a '/'-rooted path")
        self._root = root
        self._root_key = root.encode()
        self._target = grpc_target(parse_endpoints(endpoints))
        self._timeout = timeout
        self._retry_timeout = retry_timeout
        self._epoch = _open_epoch(self._target, self._root_key, connect_timeout)
        self._client: aetcd.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- plumbing ---------------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self._epoch

    async def _connected(self) -> aetcd.Client:
        """The aetcd client of the current event loop (created on first use)."""
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        if self._client is None:
            host, _, port = self._target.rpartition(":")
            self._client = aetcd.Client(host=host, port=int(port), options=CHANNEL_OPTIONS)
            self._loop = loop
        elif self._loop is not loop:
            raise StoreError("EtcdStore used from a second event loop")
        client = self._client
        await client.connect()  # opens the channel once; then returns at once
        return client

    def _key(self, key: str) -> bytes:
        return (self._root + check_key(key)).encode()

    def _unkey(self, key: bytes) -> str:
        # "replace": a foreign non-UTF-8 key written under our root (etcdctl)
        # must not break every list and watch that meets it.
        return key.decode(errors="replace")[len(self._root) :]

    def _range(self, prefix: str) -> tuple[bytes, bytes]:
        start = self._root + (check_prefix(prefix) or "/")
        end = prefix_end(start)
        return start.encode(), (end.encode() if end is not None else b"\x00")

    def _options(self) -> dict[str, Any]:
        """Per-call options: deadline, wait for a live member, require a leader."""
        return {"timeout": self._timeout, "wait_for_ready": True, "metadata": REQUIRE_LEADER}

    @contextlib.contextmanager
    def _close_guard(self) -> Iterator[None]:
        """Closing the channel cancels our calls: report that as "closed", not as a cancellation."""
        try:
            yield
        except asyncio.CancelledError:
            if self._cancelled_by_close():
                raise StoreError("store is closed") from None
            raise

    def _cancelled_by_close(self) -> bool:
        """A CancelledError came from close() cancelling our gRPC calls, not from our task."""
        task = asyncio.current_task()
        return self._closed and (task is None or task.cancelling() == 0)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, retried on transient failures for ``retry_timeout``; errors mapped.

        Only for calls that may safely run twice: reads, keepalives, compaction.
        """
        backoff = _Backoff(self._retry_timeout)
        while True:
            try:
                with self._close_guard():
                    return await attempt()
            except grpc.aio.AioRpcError as exc:
                if not _transient(exc) or self._closed or not await backoff.wait():
                    raise _error(exc) from exc

    async def _txn(self, key: str, compare: Any, success: Any, failure: Any = ()) -> Any:
        """A conditional write's TxnResponse; OutcomeUnknown when its effect cannot be known.

        A transient failure is retried with the same transaction; once an
        attempt failed that way, a failed condition or error on a retry is
        OutcomeUnknown (see the module docstring).
        """
        client = await self._connected()
        request = rpc.TxnRequest(compare=[compare], success=[success], failure=list(failure))
        backoff = _Backoff(self._retry_timeout)
        uncertain = False
        while True:
            try:
                with self._close_guard():
                    response = await client.kvstub.Txn(request, **self._options())
            except grpc.aio.AioRpcError as exc:
                if not _transient(exc) and not uncertain:
                    raise _error(exc) from exc
                uncertain = True
                if not _transient(exc) or self._closed or not await backoff.wait():
                    raise OutcomeUnknown(f"{key}: write outcome unknown: {exc.details()}") from exc
                continue
            if uncertain and not response.succeeded:
                raise OutcomeUnknown(f"{key}: an earlier attempt of this write may have applied")
            return response

    # -- reads ------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        client = await self._connected()
        request = rpc.RangeRequest(key=self._key(key))
        response = await self._retrying(lambda: client.kvstub.Range(request, **self._options()))
        return _kv(key, response.kvs[0]) if response.kvs else None

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        client = await self._connected()
        start, end = self._range(prefix)
        if start_after:
            start = max(start, (self._root + start_after).encode() + b"\x00")
        request = rpc.RangeRequest(key=start, range_end=end, limit=max(limit, 0), revision=max(revision, 0))
        try:
            response = await self._retrying(lambda: client.kvstub.Range(request, **self._options()))
        except _HistoryCompacted:
            raise Compacted(revision, await self.compacted_revision()) from None
        items = [_kv(self._unkey(kv.key), kv) for kv in response.kvs]
        return ListResult(items, revision if revision > 0 else response.header.revision, bool(response.more))

    async def current_revision(self) -> int:
        client = await self._connected()
        request = rpc.RangeRequest(key=self._root_key, count_only=True)
        response = await self._retrying(lambda: client.kvstub.Range(request, **self._options()))
        return int(response.header.revision)

    async def compacted_revision(self) -> int:
        """etcd has no call for it: a watch on the root key from revision 1 reveals it."""
        client = await self._connected()
        return await self._retrying(lambda: self._probe_compaction(client))

    async def _probe_compaction(self, client: aetcd.Client) -> int:
        call = rpc.WatchStub(client.channel).Watch(**self._options())
        try:
            create = rpc.WatchCreateRequest(key=self._root_key, start_revision=1)
            await call.write(rpc.WatchRequest(create_request=create))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise Unavailable("etcd closed the watch stream")
                if response.compact_revision:
                    return int(response.compact_revision)
                if response.events or not response.created:
                    return 0  # history from revision 1 is still there
        finally:
            call.cancel()

    # -- writes -----------------------------------------------------------------

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> KeyValue:
        k = self._key(key)
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=bytes(value), lease=lease))
        response = await self._txn(key, _compare(k, "CREATE", "EQUAL", 0), put)
        if not response.succeeded:
            raise AlreadyExists(f"{key}: already exists")
        revision = response.header.revision
        return KeyValue(key, bytes(value), revision, revision, 1, lease)

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0, lease: int = 0) -> KeyValue:
        k = self._key(key)
        put = rpc.PutRequest(key=k, value=bytes(value), lease=lease, prev_kv=True)
        response = await self._conditional(key, k, expected_revision, rpc.RequestOp(request_put=put))
        prev = response.responses[0].response_put.prev_kv
        return KeyValue(key, bytes(value), prev.create_revision, response.header.revision, prev.version + 1, lease)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        k = self._key(key)
        delete = rpc.DeleteRangeRequest(key=k, prev_kv=True)
        response = await self._conditional(key, k, expected_revision, rpc.RequestOp(request_delete_range=delete))
        prev = response.responses[0].response_delete_range.prev_kvs[0]
        return KeyValue(key, prev.value, prev.create_revision, response.header.revision, prev.version, prev.lease)

    async def _conditional(self, key: str, k: bytes, expected: int, operation: Any) -> Any:
        """Run ``operation`` if the key exists (and is at ``expected`` when given)."""
        if expected:
            compare = _compare(k, "MOD", "EQUAL", expected)
        else:
            compare = _compare(k, "CREATE", "GREATER", 0)
        read = rpc.RequestOp(request_range=rpc.RangeRequest(key=k))
        response = await self._txn(key, compare, operation, [read])
        if response.succeeded:
            return response
        current = response.responses[0].response_range.kvs
        if expected:
            raise Conflict(key, expected, current[0].mod_revision if current else 0)
        raise NotFound(f"{key}: not found")

    async def compact(self, revision: int) -> None:
        client = await self._connected()
        request = rpc.CompactionRequest(revision=revision, physical=True)
        try:
            await self._retrying(lambda: client.kvstub.Compact(request, **self._options()))
        except _HistoryCompacted:
            return  # already compacted at or beyond `revision`

    async def erase(self) -> None:
        """Delete every key of this deployment and its epoch marker, in one transaction (``restore --force``).

        The keys of other roots are untouched. The epoch is drawn again by the
        next :class:`EtcdStore` opened on this root, so close this one and
        open another to write the restored keys.
        """
        client = await self._connected()
        start, end = self._range("")
        request = rpc.TxnRequest(
            success=[
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=start, range_end=end)),
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._root_key)),
            ]
        )
        await self._retrying(lambda: client.kvstub.Txn(request, **self._options()))

    # -- leases -----------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> Lease:
        # Retried although not idempotent: a duplicate grant only leaves an
        # unused lease behind, which expires after `ttl`.
        client = await self._connected()
        request = rpc.LeaseGrantRequest(TTL=ttl)
        response = await self._retrying(lambda: client.leasestub.LeaseGrant(request, **self._options()))
        if response.error:
            raise StoreError(f"etcd refused the lease: {response.error}")
        return Lease(int(response.ID), int(response.TTL))

    async def keepalive(self, lease_id: int) -> int:
        client = await self._connected()
        ttl = await self._retrying(lambda: self._keepalive_once(client, lease_id))
        if ttl <= 0:
            raise LeaseNotFound(f"lease {lease_id} not found (expired or revoked?)")
        return ttl

    async def _keepalive_once(self, client: aetcd.Client, lease_id: int) -> int:
        call = client.leasestub.LeaseKeepAlive(**self._options())
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            response = await call.read()
        finally:
            call.cancel()
        if response is grpc.aio.EOF:
            raise Unavailable("etcd closed the keepalive stream")
        return int(response.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        client = await self._connected()
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        attempts = 0

        async def revoke() -> None:
            nonlocal attempts
            attempts += 1
            await client.leasestub.LeaseRevoke(request, **self._options())

        try:
            await self._retrying(revoke)
        except LeaseNotFound:
            if attempts == 1:
                raise
            # else an earlier attempt, whose reply was lost, revoked it: done.

    # -- watch ------------------------------------------------------------------

    async def watch(self, prefix: str, after_revision: int) -> AsyncGenerator[Event | Progress, None]:
        client = await self._connected()
        start, end = self._range(prefix)
        next_revision = after_revision + 1
        backoff = _Backoff(self._retry_timeout)
        while True:  # one etcd watch stream per turn; resumed where the last one broke
            try:
                async for item in self._watch_stream(client, start, end, next_revision):
                    backoff = _Backoff(self._retry_timeout)  # a working stream resets the budget
                    next_revision = max(next_revision, item.revision + 1)
                    yield item
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                if not _transient(exc) or not await backoff.wait():
                    raise _error(exc) from exc
            except asyncio.CancelledError:
                if self._cancelled_by_close():
                    return
                raise
            else:  # etcd ended the stream (as it does when its member loses the leader)
                if self._closed:
                    return
                if not await backoff.wait():
                    raise Unavailable("etcd keeps ending the watch stream")

    async def _watch_stream(
        self, client: aetcd.Client, start: bytes, end: bytes, start_revision: int
    ) -> AsyncIterator[Event | Progress]:
        """One etcd watch stream from ``start_revision`` (inclusive) until it breaks."""
        call = rpc.WatchStub(client.channel).Watch(wait_for_ready=True, metadata=REQUIRE_LEADER)
        try:
            create = rpc.WatchCreateRequest(
                key=start, range_end=end, start_revision=start_revision, prev_kv=True, progress_notify=True
            )
            await call.write(rpc.WatchRequest(create_request=create))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                for item in self._watch_items(response, start_revision):
                    yield item
        finally:
            call.cancel()

    def _watch_items(self, response: Any, start_revision: int) -> WatchItems:
        if response.compact_revision:
            raise Compacted(start_revision, int(response.compact_revision))
        if response.canceled:
            raise StoreError(f"etcd cancelled the watch: {response.cancel_reason}")
        if response.created:
            return []  # its revision is "now", not progress: history may still be on its way
        if not response.events:
            return [Progress(int(response.header.revision))]
        return [self._event(event) for event in response.events]

    def _event(self, event: Any) -> Event:
        key = self._unkey(event.kv.key)
        prev = _kv(key, event.prev_kv) if event.HasField("prev_kv") else None
        if event.type == rpc.Event.PUT:
            kv = _kv(key, event.kv)
            return Event(EventType.PUT, kv, None if kv.create_revision == kv.mod_revision else prev)
        revision = event.kv.mod_revision
        if prev is None:  # prev_kv is missing only if etcd compacted it meanwhile
            return Event(EventType.DELETE, KeyValue(key, b"", 0, revision, 0, 0), None)
        return Event(
            EventType.DELETE, KeyValue(key, prev.value, prev.create_revision, revision, prev.version, prev.lease), prev
        )

    # -- close ------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            await self._client.close()


def _open_epoch(target: str, root_key: bytes, timeout: float) -> str:
    """Read the epoch UUID under the root key, writing a new one if absent (blocking)."""
    put = rpc.PutRequest(key=root_key, value=uuid.uuid4().hex.encode())
    request = rpc.TxnRequest(
        compare=[_compare(root_key, "CREATE", "EQUAL", 0)],
        success=[rpc.RequestOp(request_put=put)],
        failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=root_key))],
    )
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target, options=list(CHANNEL_OPTIONS.items())) as channel:
        stub = rpc.KVStub(channel)
        while True:
            try:
                response = stub.Txn(request, timeout=max(deadline - time.monotonic(), 0.1), wait_for_ready=True)
                break
            except grpc.RpcError as exc:
                if time.monotonic() >= deadline:
                    raise Unavailable(f"cannot reach etcd at {target}: {exc}") from exc
                time.sleep(0.1)  # "no leader" while the cluster starts: try again
    if response.succeeded:
        marker = put.value.decode()
    else:
        marker = response.responses[0].response_range.kvs[0].value.decode(errors="replace")
    return f"{response.header.cluster_id:016x}-{marker}"
