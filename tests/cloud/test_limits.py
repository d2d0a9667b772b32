"""Security limits (issue 12): session message budgets, watch slots, the token lookup cache."""

from __future__ import annotations

import pytest

from edgefleet.cloud.auth import (
    TOKEN_PREFIX,
    Authenticator,
    Role,
    Unauthorized,
    generate_token,
    split_token,
    token_record,
)
from edgefleet.cloud.limits import SessionBudget, SessionRates, TokenBucket, TooManyWatches, WatchSlots
from edgefleet.store.interface import Store


def test_a_token_bucket_lets_a_burst_through_then_paces() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.take(1, 0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(1, 0.0) == pytest.approx(0.1)  # one in debt: a tenth of a second
    assert bucket.take(1, 0.2) == 0.0  # refilled meanwhile
    assert bucket.take(100, 100.0) == pytest.approx(9.5)  # never more than the burst saved


def test_a_session_budget_counts_messages_and_bytes() -> None:
    budget = SessionBudget(
        SessionRates(messages_per_second=100, message_burst=2, bytes_per_second=1000, byte_burst=1000)
    )
    assert budget.charge(10, 0.0) == 0.0
    assert budget.charge(10, 0.0) == 0.0
    assert budget.charge(10, 0.0) == pytest.approx(0.01)  # the third message: over the message burst
    assert budget.charge(2000, 1.0) == pytest.approx(1.0)  # bytes: 1000 over, at 1000 a second


def test_a_flood_of_1000_messages_a_second_is_read_at_the_session_rate() -> None:
    budget, now, read = SessionBudget(), 0.0, 0
    while now < 10.0:  # the hub's loop: read one, then wait what the budget says
        now += max(budget.charge(500, now), 0.001)  # the attacker always has the next one ready
        read += 1
    assert read <= 100 * 10 + 200 + 1


def test_watch_slots_are_counted_per_principal() -> None:
    slots = WatchSlots(2)
    slots.acquire("alice")
    slots.acquire("alice")
    with pytest.raises(TooManyWatches, match="'alice' holds 2 open watches"):
        slots.acquire("alice")
    slots.acquire("bob")  # another token has its own
    slots.release("alice")
    slots.acquire("alice")
    assert slots.held("alice") == 2 and slots.held("bob") == 1
    unlimited = WatchSlots(0)
    for _ in range(1000):
        unlimited.acquire("alice")
    with pytest.raises(ValueError, match="max-watches-per-principal"):
        WatchSlots(-1)


async def test_unknown_token_lookups_are_bounded_and_forgotten_soon(store: Store) -> None:
    """Issue 12 (Low): random token ids must not grow the cache; an unknown id is remembered briefly."""
    authenticator = Authenticator(store, cache_entries=100, negative_seconds=0.0)
    for _ in range(1000):
        with pytest.raises(Unauthorized):
            await authenticator.authenticate(f"Bearer {generate_token()}")
    assert authenticator.cached() == 100
    token = generate_token()
    token_id, secret = split_token(token)
    with pytest.raises(Unauthorized):
        await authenticator.authenticate(f"Bearer {token}")  # unknown now, remembered as such...
    await store.create(TOKEN_PREFIX + token_id, token_record("late", Role.VIEWER, secret))
    assert (await authenticator.authenticate(f"Bearer {token}")).name == "late"  # ...but not for long
