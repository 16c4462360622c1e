"""The engine under a failover serving policy: MCLT cap, no new allocations, conflicted NAKs."""

from __future__ import annotations

import pytest

from hubspoke.model import Versioned
from spoke.dhcp.decisions import Commit, Reply, ServingPolicy
from spoke.dhcp.message import MessageType
from tests.lab.scripted_client import (
    LAN,
    ScriptedClient,
    Server,
    drop_reason,
    mac,
    site_scopes,
)

NOW = 1_700_000_000.0
MCLT = ServingPolicy(lease_cap=60, journal_until=NOW + 1000)


@pytest.fixture
def server() -> Server:
    return Server(site_scopes())


def test_offers_and_acks_are_capped_at_mclt(server: Server) -> None:
    server.policy = MCLT
    c = ScriptedClient(mac(1))
    offer = server.talk(c, c.discover(), LAN, NOW)
    assert isinstance(offer.decision, Reply)
    assert offer.decision.out.message.lease_time == 60
    ack = server.talk(c, c.select(), LAN, NOW + 1)
    assert isinstance(ack.decision, Commit)
    assert ack.decision.write.binding.expires == NOW + 1 + 60
    assert c.lease == 60
    sent = ack.decision.on_success
    assert sent is not None
    t1, t2 = sent.message.options[58], sent.message.options[59]
    assert int.from_bytes(t1, "big") < int.from_bytes(t2, "big") < 60


def test_an_early_renewal_of_a_long_lease_is_capped(server: Server) -> None:
    c = ScriptedClient(mac(2))
    ip = server.dora(c, LAN, NOW)
    assert ip is not None and c.lease == 3600
    server.policy = MCLT
    ex = server.talk(c, c.renew(), LAN, NOW + 10)
    assert isinstance(ex.decision, Reply) and ex.decision.outcome == "ack-early-renewal"
    assert c.lease == 60


def test_no_new_allocations_but_renewals_go_on(server: Server) -> None:
    old = ScriptedClient(mac(3))
    ip = server.dora(old, LAN, NOW)
    assert ip is not None
    server.policy = ServingPolicy(lease_cap=60, allocate_new=False)
    new = ScriptedClient(mac(4))
    ex = server.handle(new.discover(), LAN, NOW + 1)
    assert drop_reason(ex.decision) == "no-new-allocations"
    # a renewal past the early-renewal window is a write without a fence: allowed
    renew = server.talk(old, old.renew(), LAN, NOW + 1000)
    assert isinstance(renew.decision, Commit) and renew.decision.write.fence is None
    assert renew.committed and old.lease == 60 and old.address == ip


@pytest.mark.parametrize("how", ["renew", "init-reboot"])
def test_a_conflicted_client_is_naked_once(server: Server, how: str) -> None:
    c = ScriptedClient(mac(5))
    ip = server.dora(c, LAN, NOW)
    assert ip is not None
    key = c.discover().client_key
    server.engine.conflicted.add(("lan", ip, key))
    msg = c.renew() if how == "renew" else c.init_reboot(ip)
    ex = server.talk(c, msg, LAN, NOW + 1000)
    assert isinstance(ex.decision, Reply)
    assert ex.decision.out.message.message_type is MessageType.NAK
    assert ("lan", ip, key) not in server.engine.conflicted


# -- bounds while journaling (docs/cluster.md, "Why no address is bound twice", R4) ----------
def journaled(server: Server, ex_decision: object, now: float) -> None:
    """Settle a Commit the way the journal path does (no etcd version moves)."""
    assert isinstance(ex_decision, Commit)
    w = ex_decision.write
    version = w.expected if w.expected is not None else Versioned(0, 0)
    server.engine.committed(ex_decision, version, now, journaled=True)


def test_journaled_renewals_never_pass_the_recorded_expiry_plus_mclt() -> None:
    """R4(a): repeated renewals while interrupted do not stretch the lease: each ends by the
    expiry etcd recorded plus MCLT, and past it the spoke stays silent (the client rebinds)."""
    server = Server(site_scopes(lease_time=120, min_lease_time=10))
    c = ScriptedClient(mac(6))
    ip = server.dora(c, LAN, NOW)
    assert ip is not None and c.lease == 120
    recorded = server.table.get("lan", ip)
    assert recorded is not None
    # own-block horizon already over: only the recorded expiry bounds the renewals
    server.policy = ServingPolicy(lease_cap=60, journal_until=NOW)
    ends = []
    for t in (NOW + 100, NOW + 140, NOW + 170):
        d = server.engine.handle(c.renew(), LAN, t, server.policy)
        assert isinstance(d, Commit)
        end = d.write.binding.expires
        ends.append(end)
        assert end <= NOW + 120 + 60
        journaled(server, d, t)
        assert server.table.etcd_entry("lan", ip) == recorded  # the journal never replaces it
    assert ends[-1] == NOW + 180
    assert (
        drop_reason(server.engine.handle(c.renew(), LAN, NOW + 180, server.policy)) == "lease-bound"
    )


def test_in_our_own_blocks_a_journaled_lease_ends_by_journal_until(server: Server) -> None:
    """R4(b): a new allocation while interrupted runs at most to `journal_until`."""
    server.policy = ServingPolicy(lease_cap=60, journal_until=NOW + 25)
    c = ScriptedClient(mac(7))
    server.talk(c, c.discover(), LAN, NOW)
    d = server.engine.handle(c.select(), LAN, NOW + 1, server.policy)
    assert isinstance(d, Commit) and d.write.fence is not None
    assert d.write.binding.expires == NOW + 25
    server.policy = ServingPolicy(lease_cap=60, journal_until=NOW + 0.5)
    c2 = ScriptedClient(mac(8))
    server.talk(c2, c2.discover(), LAN, NOW)
    assert (
        drop_reason(server.engine.handle(c2.select(), LAN, NOW + 1, server.policy)) == "lease-bound"
    )


def test_an_address_of_unknown_outcome_is_held_for_its_client_only(server: Server) -> None:
    """R6: while a commit for A may still land, B never gets the address; A may."""
    a, b = ScriptedClient(mac(9)), ScriptedClient(mac(10))
    server.talk(a, a.discover(), LAN, NOW)
    d = server.engine.handle(a.select(), LAN, NOW, server.policy)
    assert isinstance(d, Commit)
    ip = d.write.ip
    server.table.hold_unknown("lan", ip, d.write.binding.client_key)
    server.engine.table.forget_offer("lan", d.write.binding.client_key)
    later = NOW + 3600  # long after any offer lapsed
    offer_b = server.handle(b.discover(requested=ip), LAN, later).sent
    assert offer_b is not None and offer_b.message.yiaddr != ip
    assert not server.table.is_free("lan", ip, later)
    assert server.table.is_free("lan", ip, later, a.discover().client_key)
    again = server.engine.handle(a.select(), LAN, NOW + 5, server.policy)
    assert isinstance(again, Commit) and again.write.ip == ip
    server.table.settle_unknown("lan", ip)
    assert server.table.unknown_holder("lan", ip) is None
    assert server.table.is_free("lan", ip, later)
