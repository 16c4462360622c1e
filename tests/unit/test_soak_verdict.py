"""The soak's and the chaos capture's pure parts: capture lines parsed, renewals classified,
the worst new-client wait of a fault (bench/soak.py, tests/lab/chaos.py)."""

from __future__ import annotations

import random

from bench.chaos_hubspoke import fault_named
from bench.soak import (
    SOAK_FAULTS,
    FaultBag,
    FaultRecord,
    new_client_times,
    renewal_stats,
    renewal_verdict,
    worst_wait,
)
from tests.lab.chaos import Ack, Nak, Renewal, parse_acks, parse_naks, parse_renewals

CAPTURE = """# ready
100.000000 10.78.16.1 000c01020304 10.77.0.11 30 01000c01020304 0000002a
100.500000 NAK 000c01020305 10.77.0.12 0000002b
101.000000 REQ 000c01020304 10.78.16.1 0000002c
102.000000 10.78.16.2 000c01020306 10.77.0.13 30 -
"""


def test_capture_lines_are_parsed_by_kind() -> None:
    acks = parse_acks(CAPTURE)
    assert [(a.ip, a.mac, a.xid) for a in acks] == [
        ("10.78.16.1", "000c01020304", "0000002a"),
        ("10.78.16.2", "000c01020306", ""),
    ]
    assert acks[0].client_id == "01000c01020304" and acks[1].client_id == ""
    assert parse_naks(CAPTURE) == [Nak(100.5, "000c01020305", "10.77.0.12", "0000002b")]
    assert parse_renewals(CAPTURE) == [Renewal(101.0, "000c01020304", "10.78.16.1", "0000002c")]


def ack(at: float, ip: str, mac: str, xid: str, server: str = "s", lease: int = 30) -> Ack:
    return Ack(at, ip, mac, server, lease, "", xid)


def test_renewals_of_running_leases_are_classified_and_expired_ones_left_out() -> None:
    acks = [
        ack(0.0, "10.0.0.1", "a", "1"),
        ack(10.0, "10.0.0.1", "a", "2"),  # renewal 2: ACKed
        ack(0.0, "10.0.0.2", "b", "3"),
        ack(0.0, "10.0.0.3", "c", "5"),
        ack(12.0, "10.0.0.9", "c", "6"),  # renewal 6: another address
        ack(0.0, "10.0.0.4", "d", "7"),
        ack(13.0, "10.0.0.4", "d", "8", server="s1"),  # renewal 8: ACKed by one, NAKed by another
        ack(0.0, "10.0.0.5", "e", "9"),
    ]
    naks = [Nak(11.0, "b", "s", "4"), Nak(13.0, "d", "s2", "8")]
    renewals = [
        Renewal(10.0, "a", "10.0.0.1", "2"),
        Renewal(11.0, "b", "10.0.0.2", "4"),
        Renewal(12.0, "c", "10.0.0.3", "6"),
        Renewal(13.0, "d", "10.0.0.4", "8"),
        Renewal(14.0, "e", "10.0.0.5", "10"),  # no answer
        Renewal(40.0, "e", "10.0.0.5", "11"),  # its lease ended at 30: left out
    ]
    v = renewal_verdict(acks, naks, renewals)
    assert (v.running, v.acked, v.naked, v.moved, v.contradictory, v.unanswered, v.expired) == (
        5, 1, 1, 1, 1, 1, 1,
    )  # fmt: skip
    assert v.failed == 2


def test_worst_wait_counts_only_new_clients_of_the_faulted_side() -> None:
    acks = [ack(t, f"10.0.0.{i}", f"{i:012x}", "") for i, t in enumerate((1.0, 2.0, 9.0, 10.0))]
    acks.append(ack(6.0, "10.0.0.0", f"{0:012x}", ""))  # a renewal, not a new client
    new = new_client_times(acks)
    assert sorted(t for t, _ in new) == [1.0, 2.0, 9.0, 10.0]
    rec = FaultRecord(fault_named("etcd frozen 20 s (SIGSTOP)"), at=2.5, restored_at=4.0)
    assert worst_wait(rec, new, 12.0) == 6.5  # 2.5 -> 9.0
    quorum = FaultRecord(fault_named("etcd quorum lost 15 s (2 of 3 frozen)"), 2.5, 8.0)
    assert worst_wait(quorum, new, 12.0) == 1.0  # counted from the restore: 8.0 -> 9.0
    mine = {b for t, b in new if t == 10.0}
    rec.victim_buckets = frozenset(mine)
    assert worst_wait(rec, [(t, b) for t, b in new if t < 10.0], 12.0) is None


def test_perfdhcp_renewal_counters() -> None:
    out = (
        "***Statistics for: REQUEST-ACK***\nsent packets: 9\n"
        "***Statistics for: REQUEST-ACK (renewal)***\nsent packets: 148\n"
        "received packets: 140\ndrops: 8\n"
    )
    assert renewal_stats(out) == {"sent packets": 148, "received packets": 140, "drops": 8}


def test_the_fault_bag_draws_every_kind_once_per_round_and_replays_by_seed() -> None:
    bag = FaultBag(SOAK_FAULTS, random.Random(7))
    first = [bag.draw().kind for _ in range(len(SOAK_FAULTS))]
    second = [bag.draw().kind for _ in range(len(SOAK_FAULTS))]
    assert sorted(first) == sorted(second) == sorted(f.kind for f in SOAK_FAULTS)
    assert first != second
    again = FaultBag(SOAK_FAULTS, random.Random(7))
    assert [again.draw().kind for _ in range(len(SOAK_FAULTS))] == first
