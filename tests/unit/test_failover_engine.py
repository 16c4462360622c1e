"""The engine under a failover serving policy: MCLT cap, no new allocations, conflicted NAKs."""

from __future__ import annotations

import pytest

from spoke.dhcp.decisions import Commit, Reply, ServingPolicy
from spoke.dhcp.message import MessageType
from tests.unit.dhcp.scripted_client import (
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
    server.engine.policy = MCLT
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
    server.engine.policy = MCLT
    ex = server.talk(c, c.renew(), LAN, NOW + 10)
    assert isinstance(ex.decision, Reply) and ex.decision.outcome == "ack-early-renewal"
    assert c.lease == 60


def test_no_new_allocations_but_renewals_go_on(server: Server) -> None:
    old = ScriptedClient(mac(3))
    ip = server.dora(old, LAN, NOW)
    assert ip is not None
    server.engine.policy = ServingPolicy(lease_cap=60, allocate_new=False)
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
