"""Rendezvous hashing (edgefleet.hashing), the one function the cache tiers and the GSLB share."""

from __future__ import annotations

from edgefleet import hashing


def test_rendezvous_rank_is_stable_and_moves_only_the_keys_of_a_member_that_leaves() -> None:
    members = [f"par-edge-{i}" for i in range(1, 7)]
    keys = [f"http://demo.test/object-{i}" for i in range(600)]
    owners = {key: hashing.rank(members, key)[0] for key in keys}
    # Pinned: nodes of different versions (and the GSLB) must agree on owners, so the score may never change.
    assert hashing.score("par-edge-1", "k") == 0x30E9_C8C5_DDE1_3B13
    assert owners == {key: hashing.rank(list(reversed(members)), key)[0] for key in keys}, "order-independent"
    assert all(hashing.rank(members, key)[0] == max(members, key=lambda m: hashing.score(m, key)) for key in keys)
    assert min(list(owners.values()).count(m) for m in members) > 50, "keys spread over every member"
    gone = "par-edge-3"
    after = {key: hashing.rank([m for m in members if m != gone], key)[0] for key in keys}
    moved = {key for key in keys if after[key] != owners[key]}
    assert moved == {key for key in keys if owners[key] == gone}
    assert all(after[key] == hashing.rank(members, key)[1] for key in moved), "the runner-up takes over"
