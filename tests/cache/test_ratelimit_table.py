"""The node's shared rate-limit table in one process (edgefleet.cache.storage.ratetable), with a fake clock.

Properties (hypothesis): a key never gets more than ``rate * time + burst`` while it keeps its bucket; the
table makes the same decisions as the per-process TokenBuckets (one arithmetic); memory is fixed whatever
the flood of keys, and a full set evicts its least recently used bucket. Also: views of one region share
buckets, identities keep Domains and settings apart, a corrupt slot is clamped, a bad descriptor is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.cache.config import CacheConfig, parse_config
from edgefleet.cache.errors import ConfigError
from edgefleet.cache.front.edgerules import rate_table_warning
from edgefleet.cache.policy.rules import CompileEnv
from edgefleet.cache.policy.rules.ratelimit import Limiter, TokenBuckets, pick_way
from edgefleet.cache.storage import ratetable
from edgefleet.cache.storage.ratetable import SLOT, WAYS, BucketTable, SharedLimiter, create_region, region_bytes
from tests import rulehelpers
from tests.rulehelpers import program, request


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tag_of(limiter: Limiter, key: str) -> int:
    """The tag the shared table files ``key`` under for ``limiter``."""
    assert isinstance(limiter, SharedLimiter)
    digest = limiter._hasher.copy()
    digest.update(key.encode())
    return int.from_bytes(digest.digest(), "little") or 1


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(clock: Clock) -> Iterator[BucketTable]:
    table = BucketTable.private(4096, clock=clock)
    yield table
    table.close()


arrivals = rulehelpers.arrivals(["a", "b", "c", "d"])


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=50, allow_nan=False),
    burst=st.integers(min_value=1, max_value=20),
    gaps=arrivals,
)
def test_a_key_never_gets_more_than_rate_times_time_plus_burst(
    rate: float, burst: int, gaps: list[tuple[float, str]]
) -> None:
    clock = Clock()
    table = BucketTable.private(1024, clock=clock)
    limiter = table.limiters_for("demo")("limit/0", rate, burst, 16)
    allowed: dict[str, list[float]] = {}
    for gap, key in gaps:
        clock.now += gap / 10
        if limiter.take(key, 0.0) is None:
            allowed.setdefault(key, []).append(clock.now)
    table.close()
    rulehelpers.assert_within_rate(allowed, rate, burst)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=50, allow_nan=False),
    burst=st.integers(min_value=1, max_value=20),
    gaps=arrivals,
)
def test_the_shared_table_decides_as_the_per_process_buckets(
    rate: float, burst: int, gaps: list[tuple[float, str]]
) -> None:
    clock = Clock()
    table = BucketTable.private(1024, clock=clock)
    shared = table.limiters_for("demo")("limit/0", rate, burst, 16)
    local = TokenBuckets(rate, burst, 16)
    for gap, key in gaps:
        clock.now += gap / 10
        assert shared.take(key, 0.0) == local.take(key, clock.now)
    table.close()


@settings(max_examples=30, deadline=None)
@given(keys=st.lists(st.integers(0, 100_000), min_size=1, max_size=3000))
def test_memory_is_fixed_under_a_flood_of_distinct_keys(keys: list[int]) -> None:
    clock = Clock()
    table = BucketTable.private(64, clock=clock)
    limiter = table.limiters_for("demo")("limit/0", 1.0, 1, 16)
    size = os.fstat(table._fd).st_size
    for key in keys:
        clock.now += 0.001
        limiter.take(f"198.51.{key // 256}.{key % 256}", 0.0)
    assert table.occupied() <= table.slots == 64
    assert os.fstat(table._fd).st_size == size == region_bytes(64)
    distinct = len(set(keys))
    assert table.evictions >= distinct - table.slots  # every key past the table's size made room
    table.close()


def test_a_full_set_evicts_its_least_recently_used_bucket(clock: Clock) -> None:
    table = BucketTable.private(64, clock=clock)  # 8 sets of 8 ways
    limiter = table.limiters_for("demo")("limit/0", 0.001, 1, 16)
    by_set: dict[int, list[str]] = {}
    for n in range(1000):
        key = f"10.0.{n // 256}.{n % 256}"
        by_set.setdefault(tag_of(limiter, key) % 8, []).append(key)
    keys = next(keys for keys in by_set.values() if len(keys) > WAYS)[: WAYS + 1]
    for key in keys[:WAYS]:  # fills the set: every bucket spent (burst 1, no refill to speak of)
        clock.now += 1
        assert limiter.take(key, 0.0) is None
    clock.now += 1
    assert limiter.take(keys[1], 0.0) is not None  # keys[1] used again: keys[0] is now the oldest
    clock.now += 1
    assert limiter.take(keys[WAYS], 0.0) is None  # a new key: evicts keys[0]
    assert table.evictions == 1
    assert limiter.take(keys[1], 0.0) is not None  # kept, still spent
    assert limiter.take(keys[0], 0.0) is None  # evicted: back with a full bucket
    table.close()


def test_pick_way_prefers_the_key_then_an_empty_way_then_the_oldest() -> None:
    assert pick_way((5, 0, 7), (1.0, 0.0, 2.0), 7) == (2, True)
    assert pick_way((5, 0, 7), (1.0, 0.0, 2.0), 9) == (1, False)
    assert pick_way((5, 6, 7), (3.0, 1.0, 2.0), 9) == (1, False)


def test_views_of_one_region_share_buckets_and_identities_keep_limits_apart(clock: Clock) -> None:
    fd = create_region(1024)
    first, second = BucketTable(fd, clock=clock), BucketTable(fd, clock=clock)
    take_first = first.limiters_for("demo")("limit/0", 1.0, 2, 16).take
    take_second = second.limiters_for("demo")("limit/0", 1.0, 2, 16).take
    assert take_first("k", 0.0) is None
    assert take_second("k", 0.0) is None
    assert take_first("k", 0.0) == 1  # the burst of 2 is spent, across both views
    assert second.limiters_for("other")("limit/0", 1.0, 2, 16).take("k", 0.0) is None  # another Domain
    assert second.limiters_for("demo")("limit/1", 1.0, 2, 16).take("k", 0.0) is None  # another action
    assert second.limiters_for("demo")("limit/0", 2.0, 2, 16).take("k", 0.0) is None  # changed settings
    clock.now += 1.0
    assert take_second("k", 0.0) is None  # refilled at 1/s, seen by both
    assert first.limited == 1
    first.close()
    second.close()
    os.close(fd)


def test_regions_have_their_own_secret(clock: Clock) -> None:
    one, two = BucketTable.private(64, clock=clock), BucketTable.private(64, clock=clock)
    assert one._secret != two._secret
    assert one.hasher("x").digest() != two.hasher("x").digest()
    one.close()
    two.close()


def test_a_corrupt_slot_is_clamped(table: BucketTable, clock: Clock) -> None:
    limiter = table.limiters_for("demo")("limit/0", 1.0, 3, 16)
    assert limiter.take("k", 0.0) is None
    tag = tag_of(limiter, "k")
    offset = ratetable.HEADER_BYTES + (tag % (table.slots // WAYS)) * ratetable.SET.size
    way = ratetable.SET.unpack_from(table._map, offset)[0::3].index(tag)
    SLOT.pack_into(table._map, offset + way * SLOT.size, tag, float("nan"), clock.now + 1e9)
    assert limiter.take("k", 0.0) is not None  # NaN tokens: none (fail closed), the time: now
    clock.now += 1.0
    assert limiter.take("k", 0.0) is None  # refills from then on
    SLOT.pack_into(table._map, offset + way * SLOT.size, tag, 1e300, clock.now)
    assert [limiter.take("k", 0.0) for _ in range(4)] == [None, None, None, 1]  # at most the burst


def test_a_descriptor_that_is_not_a_table_is_refused() -> None:
    for size in (4096, 10):  # zeroes; shorter than a header
        fd = os.memfd_create("not-a-table")
        os.ftruncate(fd, size)
        with pytest.raises(ConfigError, match="not an edgefleet rate-limit table"):
            BucketTable(fd)
        os.close(fd)
    read, write = os.pipe()
    with pytest.raises(ConfigError, match="cannot be mapped"):
        BucketTable(read)
    os.close(read)
    os.close(write)


def test_slots_are_bounded_and_rounded_to_whole_sets() -> None:
    assert region_bytes(1) == region_bytes(ratetable.MIN_SLOTS)
    assert region_bytes(10**12) == region_bytes(ratetable.MAX_SLOTS)
    assert region_bytes(65) == ratetable.HEADER_BYTES + 9 * WAYS * SLOT.size  # 9 sets of 8


def test_long_keys_are_not_memoised(table: BucketTable) -> None:
    limiter = table.limiters_for("demo")("limit/0", 1.0, 1, 16)
    limiter.take("x" * 10_000, 0.0)
    limiter.take("203.0.113.7", 0.0)
    assert isinstance(limiter, SharedLimiter)
    assert list(limiter._tags) == ["203.0.113.7"]


def test_the_engine_keeps_rate_limits_in_the_table_it_is_given(table: BucketTable) -> None:
    rule = {"name": "limit", "actions": [{"rateLimit": {"requestsPerSecond": 1, "burst": 2}}]}
    first = program(rule, env=CompileEnv(limiters=table.limiters_for("demo")))
    again = program(rule, env=CompileEnv(limiters=table.limiters_for("demo")))  # a reload, or another worker
    assert first.on_request(request("/"), 0.0).respond is None
    assert again.on_request(request("/"), 0.0).respond is None
    answer = first.on_request(request("/"), 0.0).respond
    assert answer is not None and answer.status == 429
    assert table.stats() == {"rate_limited": 1, "rate_limit_evictions": 0}


def test_the_master_warns_when_the_limits_want_more_keys_than_the_table_holds() -> None:
    def document(sizes: list[int], slots: int) -> CacheConfig:
        limits = [{"rateLimit": {"requestsPerSecond": 1, "tableSize": size}} for size in sizes]
        domain = {"name": "demo", "hostnames": ["demo.test"], "origins": [{"url": "http://127.0.0.1:9"}]}
        return parse_config({"rateLimit": {"slots": slots}, "domains": [{**domain, "rules": [{"actions": limits}]}]})

    assert rate_table_warning(document([1000, 1000], 2048)) is None
    warning = rate_table_warning(document([1000, 1000], 1024))
    assert warning is not None and "2,000 keys" in warning and "raise rateLimit.slots" in warning
