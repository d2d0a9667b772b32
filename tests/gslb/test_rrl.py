"""Response rate limiting: token buckets per client network and response class, slip, fixed memory."""

from __future__ import annotations

import pytest

from edgefleet.gslb.rrl import PROBES, ResponseRateLimiter, RrlSettings, Verdict, client_network

VICTIM = "192.0.2.10"


def limiter(rate: int = 5, slip: int = 2, table_size: int = 1024, exempt: tuple[str, ...] = ()) -> ResponseRateLimiter:
    return ResponseRateLimiter(RrlSettings(rate=rate, slip=slip, table_size=table_size, exempt=exempt))


def verdicts(
    rrl: ResponseRateLimiter, count: int, address: str = VICTIM, response_class: str = "demo/1", now: float = 100.0
) -> list[Verdict]:
    return [rrl.check(address, response_class, now) for _ in range(count)]


def test_rate_responses_pass_then_every_slip_th_is_truncated_and_the_rest_dropped() -> None:
    seen = verdicts(limiter(rate=5, slip=2), 11)
    assert seen[:5] == [Verdict.SEND] * 5
    assert seen[5:] == [Verdict.DROP, Verdict.SLIP] * 3


@pytest.mark.parametrize(("slip", "limited"), [(0, Verdict.DROP), (1, Verdict.SLIP)])
def test_slip_zero_drops_all_and_slip_one_truncates_all(slip: int, limited: Verdict) -> None:
    assert verdicts(limiter(rate=2, slip=slip), 6)[2:] == [limited] * 4


def test_the_bucket_refills_at_the_rate() -> None:
    rrl = limiter(rate=10)
    assert Verdict.SEND not in verdicts(rrl, 20)[10:]
    assert verdicts(rrl, 3, now=100.2) == [Verdict.SEND, Verdict.SEND, Verdict.DROP]  # 0.2 s: 2 tokens back


def test_a_client_network_shares_one_budget_and_other_networks_and_classes_have_their_own() -> None:
    rrl = limiter(rate=3)
    verdicts(rrl, 3)
    assert rrl.check("192.0.2.200", "demo/1", 100.0) is not Verdict.SEND  # same /24
    assert rrl.check("192.0.3.10", "demo/1", 100.0) is Verdict.SEND
    assert rrl.check(VICTIM, "demo/28", 100.0) is Verdict.SEND


def test_networks_are_ipv4_slash_24_and_ipv6_slash_56() -> None:
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:22ff::1") == "2001:db8:1:2200::/56"
    assert client_network("not an address") == "not an address"


def test_exempt_networks_are_never_limited() -> None:
    rrl = limiter(rate=1, exempt=("127.0.0.0/8", "::1/128"))
    assert verdicts(rrl, 50, address="127.0.0.1") == [Verdict.SEND] * 50
    assert verdicts(rrl, 50, address="::1") == [Verdict.SEND] * 50
    assert RrlSettings().exempt == ("127.0.0.0/8", "::1/128")


def test_rate_zero_turns_it_off() -> None:
    assert verdicts(limiter(rate=0), 100) == [Verdict.SEND] * 100


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        RrlSettings(rate=-1)
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        RrlSettings(exempt=("nonsense",))


def test_a_flood_of_other_classes_cannot_reset_a_limited_budget_and_memory_stays_fixed() -> None:
    rrl = limiter(rate=2, slip=0, table_size=8)
    verdicts(rrl, 2)
    for network in range(5000):  # every slot busy with classes that are being limited too
        address = f"10.{network // 256}.{network % 256}.1"
        verdicts(rrl, 3, address=address)
    assert verdicts(rrl, 5) == [Verdict.DROP] * 5
    assert len(rrl._keys) == 8 and len(rrl._networks) <= 8


def test_a_quiet_class_gives_its_slot_to_another() -> None:
    rrl = limiter(rate=2, table_size=1)
    verdicts(rrl, 2)  # the only slot, now empty
    assert rrl.check("198.51.100.1", "demo/1", 100.0) is Verdict.DROP  # shares it: a collision only limits sooner
    assert rrl.check("198.51.100.1", "demo/1", 101.5) is Verdict.SEND  # refilled: taken over
    assert PROBES >= 1
