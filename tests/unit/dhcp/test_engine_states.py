"""Engine: INIT-REBOOT, RENEWING/REBINDING, early renewal, DECLINE, RELEASE, INFORM,
reservations, exhaustion and reuse delay, commit conflicts."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from hubspoke.model import Binding, BindingState, Reservation
from spoke.dhcp.decisions import Commit, CommitKind, Drop, Reply
from spoke.dhcp.engine import EngineConfig
from spoke.dhcp.message import ZERO, MessageType, Opt
from spoke.dhcp.reply import DestKind
from tests.lab.scripted_client import (
    LAN,
    RELAY_C,
    UPLINK,
    ScriptedClient,
    Server,
    mac,
    site_scopes,
)

NOW = 1_700_000_000.0
IP100 = IPv4Address("10.0.0.100")


def bound(server: Server, n: int, now: float = NOW) -> ScriptedClient:
    c = ScriptedClient(mac(n))
    assert server.dora(c, LAN, now) is not None
    return c


def outcome(d: object) -> str:
    if isinstance(d, Reply):
        return d.outcome
    if isinstance(d, Drop):
        return "drop:" + d.reason
    assert isinstance(d, Commit)
    return "commit:" + d.kind.value


def foreign(ip: IPv4Address, key: bytes, start: float, lease: float = 3600) -> Binding:
    return Binding(
        "lan", ip, BindingState.BOUND, key, b"\x02\xff\0\0\0\1", start, start + lease, "b"
    )


# -- INIT-REBOOT -----------------------------------------------------------------------------
def test_init_reboot_own_binding_is_extended() -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    ex = server.talk(c, c.init_reboot(IP100), LAN, NOW + 2000)
    assert ex.committed and isinstance(ex.decision, Commit)
    assert ex.decision.write.fence is None  # still bound to this client: no fence
    assert ex.decision.write.binding.expires == NOW + 2000 + 3600


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("10.9.9.9", "nak"),  # wrong network
        ("10.0.0.100", "nak"),  # bound to someone else
        ("10.0.0.150", "drop:unknown-client"),  # nobody's, client unknown: silence
        ("10.0.0.20", "drop:unknown-client"),  # in the subnet, outside pools
    ],
)
def test_init_reboot_other_cases(ip: str, expected: str) -> None:
    server = Server(site_scopes())
    bound(server, 1)
    stranger = ScriptedClient(mac(2))
    ex = server.talk(stranger, stranger.init_reboot(IPv4Address(ip)), LAN, NOW + 10)
    assert outcome(ex.final) == expected
    if expected == "nak":
        assert isinstance(ex.final, Reply) and ex.final.out.message.yiaddr == ZERO


def test_init_reboot_known_client_asking_wrong_address_is_naked() -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    ex = server.talk(c, c.init_reboot(IPv4Address("10.0.0.150")), LAN, NOW + 10)
    assert outcome(ex.final) == "nak"


def test_init_reboot_expired_own_binding_reclaimed_with_fence() -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    ex = server.talk(c, c.init_reboot(IP100), LAN, NOW + 5 * 3600)
    assert isinstance(ex.decision, Commit) and ex.committed
    assert ex.decision.write.fence is not None


# -- RENEWING / REBINDING, early renewal -----------------------------------------------------
def test_renewal_at_t1_extends_with_a_write() -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    writes = len(server.etcd.writes)
    ex = server.talk(c, c.renew(), LAN, NOW + 1800)
    assert ex.committed and len(server.etcd.writes) == writes + 1
    assert ex.sent is not None and ex.sent.dest.kind is DestKind.CLIENT_IP
    m = ex.sent.message
    assert m.ciaddr == IP100 == m.yiaddr and m.lease_time == 3600
    entry = server.table.get("lan", IP100)
    assert entry is not None and entry[0].expires == NOW + 1800 + 3600


@pytest.mark.parametrize(("elapsed", "early"), [(1, True), (899, True), (900, False)])
def test_early_renewal_acked_without_write(elapsed: int, early: bool) -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    writes = len(server.etcd.writes)
    ex = server.talk(c, c.renew(), LAN, NOW + elapsed)
    if early:
        assert isinstance(ex.final, Reply) and ex.final.outcome == "ack-early-renewal"
        assert len(server.etcd.writes) == writes
        m = ex.final.out.message
        assert m.message_type is MessageType.ACK and m.lease_time == 3600 - elapsed
        t1 = int.from_bytes(m.options[Opt.RENEWAL_TIME], "big")
        t2 = int.from_bytes(m.options[Opt.REBINDING_TIME], "big")
        assert 0 < t1 < t2 < 3600 - elapsed
    else:
        assert ex.committed and len(server.etcd.writes) == writes + 1


def test_renewal_of_address_bound_to_other_client_naked() -> None:
    server = Server(site_scopes())
    bound(server, 1)
    other = ScriptedClient(mac(2))
    ex = server.talk(other, other.renew(IP100), LAN, NOW + 100)
    assert outcome(ex.final) == "nak"


@pytest.mark.parametrize("ip", ["10.0.0.150", "10.0.0.20"])
def test_renewal_unknown_binding_is_silent(ip: str) -> None:
    """RENEWING and REBINDING alike: silence (see the engine docstring)."""
    server = Server(site_scopes())
    c = ScriptedClient(mac(3))
    assert server.handle(c.renew(IPv4Address(ip)), LAN, NOW).final == Drop("unknown-client")


def test_rebinding_from_wrong_network_naked() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(3), giaddr=RELAY_C)
    assert outcome(server.handle(c.renew(IP100), UPLINK, NOW).final) == "nak"


def test_renewal_served_from_block_we_do_not_own() -> None:
    """Any spoke may renew an existing binding, whatever block holds the address."""
    server = Server(site_scopes(), own=False)
    key = ScriptedClient(mac(4)).discover().client_key
    b = foreign(IP100, key, NOW)
    server.sync(b, server.etcd.put(b))
    c = ScriptedClient(mac(4))
    ex = server.talk(c, c.renew(IP100), LAN, NOW + 2000)
    assert ex.committed and isinstance(ex.decision, Commit) and ex.decision.write.fence is None


def test_renewed_lease_time_clamped() -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    ex = server.talk(c, c.renew(lease=10**6), LAN, NOW + 2000)
    assert ex.sent is not None and ex.sent.message.lease_time == 7200


# -- DECLINE ---------------------------------------------------------------------------------
def test_decline_quarantines_for_probation() -> None:
    server = Server(site_scopes(), reuse_delay=0)
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    server.talk(c, c.select(), LAN, NOW)
    ex = server.handle(c.decline(IP100, LAN.server_ip), LAN, NOW + 1)
    assert isinstance(ex.decision, Commit) and ex.decision.kind is CommitKind.DECLINE
    assert ex.sent is None and ex.committed
    entry = server.table.get("lan", IP100)
    assert entry is not None and entry[0].state is BindingState.DECLINED
    # the later of the lease it held and the end of probation (the tenure never shrinks)
    lease = c.lease
    assert lease is not None and lease > 600
    assert entry[0].expires == NOW + lease
    # the decliner and others get other addresses meanwhile
    for t in (NOW + 2, NOW + 599):
        out = server.handle(c.discover(requested=IP100), LAN, t).sent
        assert out is not None and out.message.yiaddr != IP100
    d = ScriptedClient(mac(2))
    assert server.dora(d, LAN, NOW + 3) != IP100
    # after that it is free again (freed longest ago beats nothing: fresh ones go first)
    assert server.table.is_free("lan", IP100, NOW + lease + 1)
    assert not server.table.is_free("lan", IP100, NOW + lease - 1)


def test_decline_of_an_offer_before_any_binding() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    ex = server.handle(c.decline(IP100, LAN.server_ip), LAN, NOW)
    assert isinstance(ex.decision, Commit) and ex.committed
    assert ex.decision.write.expected is None and ex.decision.write.fence is not None


@pytest.mark.parametrize(
    ("sid", "expected"),
    [("10.0.0.3", "drop:not-for-us"), ("10.0.0.2", "drop:unknown-client")],
)
def test_decline_ignored(sid: str, expected: str) -> None:
    server = Server(site_scopes())
    bound(server, 1)
    stranger = ScriptedClient(mac(9))
    d = server.handle(stranger.decline(IP100, IPv4Address(sid)), LAN, NOW).final
    assert outcome(d) == expected


# -- RELEASE ---------------------------------------------------------------------------------
def test_release_then_same_address_again() -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    others = [bound(server, n) for n in range(2, 5)]
    assert c.address == IP100 and all(o.address != IP100 for o in others)
    ex = server.handle(c.release(), LAN, NOW + 100)
    assert isinstance(ex.decision, Commit) and ex.decision.kind is CommitKind.RELEASE
    assert ex.sent is None and ex.committed
    entry = server.table.get("lan", IP100)
    assert entry is not None and entry[0].state is BindingState.RELEASED
    # another newcomer does not get it (fresh addresses first; and the reuse delay)
    assert server.dora(ScriptedClient(mac(7)), LAN, NOW + 101) != IP100
    assert server.dora(c, LAN, NOW + 5000) == IP100


def test_released_address_reused_after_the_lease_it_ended_when_pool_full() -> None:
    """A RELEASE keeps the lease's end as the binding's expiry: a spoke cut off from etcd may
    have renewed the client from its older view until then (plus MCLT), so the address goes to
    another client only after that end plus the reuse delay (docs/cluster.md)."""
    server = Server(site_scopes(pools=site_scopes()[2].pools, subnet=site_scopes()[2].subnet))
    clients = [bound(server, n) for n in range(1, 5)]
    assert server.handle(ScriptedClient(mac(50)).discover(), LAN, NOW).final == Drop(
        "pool-exhausted"
    )
    lease_end = server.table.get("lan", IPv4Address("10.2.0.10"))
    assert lease_end is not None
    server.handle(clients[0].release(), LAN, NOW + 10)
    released = server.table.get("lan", IPv4Address("10.2.0.10"))
    assert released is not None and released[0].state is BindingState.RELEASED
    assert released[0].expires == lease_end[0].expires
    late = ScriptedClient(mac(51))
    assert server.handle(late.discover(), LAN, NOW + 21).final == Drop("pool-exhausted")
    after = lease_end[0].expires + server.table.reuse_delay + 1
    assert server.dora(late, LAN, after) == IPv4Address("10.2.0.10")


@pytest.mark.parametrize(("sid", "n"), [("10.0.0.3", 1), ("10.0.0.2", 2)])
def test_release_by_wrong_server_or_client_ignored(sid: str, n: int) -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    msg = replace(
        ScriptedClient(mac(n))._msg(MessageType.RELEASE, ciaddr=IP100),
        options={
            Opt.MESSAGE_TYPE: bytes([MessageType.RELEASE]),
            Opt.SERVER_ID: IPv4Address(sid).packed,
        },
    )
    assert isinstance(server.handle(msg, LAN, NOW).final, Drop)
    entry = server.table.get("lan", IP100)
    assert entry is not None and entry[0].state is BindingState.BOUND and c.address == IP100


# -- INFORM ----------------------------------------------------------------------------------
def test_inform_acks_options_without_lease() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    ex = server.handle(c.inform(IPv4Address("10.0.0.20")), LAN, NOW)
    assert isinstance(ex.final, Reply) and ex.final.outcome == "inform"
    m = ex.final.out.message
    assert m.message_type is MessageType.ACK and m.yiaddr == ZERO
    assert m.ciaddr == IPv4Address("10.0.0.20")
    assert not {Opt.LEASE_TIME, Opt.RENEWAL_TIME, Opt.REBINDING_TIME} & set(m.options)
    assert Opt.ROUTER in m.options and Opt.SERVER_ID in m.options
    assert ex.final.out.dest.kind is DestKind.CLIENT_IP
    assert ex.final.out.dest.ip == IPv4Address("10.0.0.20")
    assert not server.etcd.writes


# -- reservations ----------------------------------------------------------------------------
RES_IP = IPv4Address("10.0.0.120")
OUT_IP = IPv4Address("10.0.0.30")  # outside the pool


def reserved_server() -> Server:
    res = (
        Reservation(RES_IP, hw_address=mac(1)),
        Reservation(OUT_IP, client_id=b"\x00printer"),
    )
    return Server(site_scopes(reservations=res))


@pytest.mark.parametrize(
    ("client", "ip"),
    [(ScriptedClient(mac(1)), RES_IP), (ScriptedClient(mac(5), client_id=b"\x00printer"), OUT_IP)],
)
def test_reserved_client_gets_its_address(client: ScriptedClient, ip: IPv4Address) -> None:
    server = reserved_server()
    assert server.dora(client, LAN, NOW) == ip


def test_reserved_address_never_given_to_others() -> None:
    server = reserved_server()
    got = {server.dora(ScriptedClient(mac(n)), LAN, NOW) for n in range(10, 109)}
    assert RES_IP not in got and None not in got and len(got) == 99
    # the pool is now exhausted except for the reserved address
    assert server.handle(ScriptedClient(mac(200)).discover(), LAN, NOW).final == Drop(
        "pool-exhausted"
    )
    assert server.dora(ScriptedClient(mac(1)), LAN, NOW) == RES_IP


@pytest.mark.parametrize("ip", [RES_IP, OUT_IP])
def test_reserved_address_refused_to_others_everywhere(ip: IPv4Address) -> None:
    server = reserved_server()
    thief = ScriptedClient(mac(9))
    assert outcome(server.handle(thief.init_reboot(ip), LAN, NOW).final) == "nak"
    assert outcome(server.handle(thief.renew(ip), LAN, NOW).final) == "nak"
    out = server.handle(thief.discover(requested=ip), LAN, NOW).sent
    assert out is not None and out.message.yiaddr != ip


def test_reserved_client_init_reboot_to_reserved_address() -> None:
    server = reserved_server()
    c = ScriptedClient(mac(1))
    ex = server.talk(c, c.init_reboot(RES_IP), LAN, NOW)
    assert ex.committed and c.address == RES_IP


# -- exhaustion ------------------------------------------------------------------------------
def test_exhaustion_still_answers_renewals() -> None:
    server = Server(site_scopes(pools=site_scopes()[2].pools, subnet=site_scopes()[2].subnet))
    clients = [bound(server, n) for n in range(1, 5)]
    assert server.handle(ScriptedClient(mac(9)).discover(), LAN, NOW + 1).final == Drop(
        "pool-exhausted"
    )
    ex = server.talk(clients[0], clients[0].renew(), LAN, NOW + 2000)
    assert ex.committed and clients[0].address is not None


def test_expired_binding_reusable_after_delay() -> None:
    server = Server(site_scopes(pools=site_scopes()[2].pools, subnet=site_scopes()[2].subnet))
    for n in range(1, 5):
        bound(server, n)
    late = ScriptedClient(mac(9))
    assert server.handle(late.discover(), LAN, NOW + 3605).final == Drop("pool-exhausted")
    assert server.dora(late, LAN, NOW + 3611) == IPv4Address("10.2.0.10")


# -- conflicts -------------------------------------------------------------------------------
def test_failed_commit_naks_and_frees_hold() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    server.etcd.fail_next = 1
    ex = server.talk(c, c.select(), LAN, NOW)
    assert not ex.committed and outcome(ex.final) == "nak"
    assert server.table.offered("lan", IP100, NOW) is None


def test_other_spoke_took_address_between_offer_and_request() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    taken = foreign(IP100, b"\x01\x01other", NOW)
    server.etcd.put(taken)  # the watch has not delivered it yet
    ex = server.talk(c, c.select(), LAN, NOW)
    assert not ex.committed and outcome(ex.final) == "nak"
    entry = server.table.get("lan", IP100)
    assert entry is not None and entry[0].client_key == b"\x01\x01other"
    assert server.dora(c, LAN, NOW + 1) == IPv4Address("10.0.0.101")


def test_concurrent_renewal_elsewhere_acked_from_refreshed_binding() -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    entry = server.table.get("lan", IP100)
    assert entry is not None
    server.etcd.put(replace(entry[0], start=NOW + 1990, expires=NOW + 1990 + 3600, node="b"))
    ex = server.talk(c, c.renew(), LAN, NOW + 2000)
    assert not ex.committed and isinstance(ex.final, Reply)
    assert ex.final.outcome == "ack-refreshed" and ex.final.out.message.lease_time == 3590


def test_fence_fails_when_block_moved() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    block = next(b for b in server.etcd.blocks if IP100 in b)
    server.etcd.own([block])  # the block key changed: our fencing revision is stale
    ex = server.talk(c, c.select(), LAN, NOW)
    assert not ex.committed and outcome(ex.final) == "nak"


def test_declined_conflict_is_dropped() -> None:
    server = Server(site_scopes())
    c = bound(server, 1)
    server.etcd.fail_next = 1
    ex = server.handle(c.decline(IP100, LAN.server_ip), LAN, NOW)
    assert ex.final == Drop("conflict")


# -- pipelining: decisions whose commits are still in flight ---------------------------------
def test_address_held_while_commit_in_flight() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    pending = server.engine.handle(c.select(), LAN, NOW + 40)  # offer lapsed; commit pending
    assert isinstance(pending, Commit) and pending.write.ip == IP100
    other = server.handle(ScriptedClient(mac(2)).discover(), LAN, NOW + 41).sent
    assert other is not None and other.message.yiaddr != IP100


def test_retransmitted_request_acked_from_refreshed_binding() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    req = c.select()
    first = server.engine.handle(req, LAN, NOW)
    second = server.engine.handle(req, LAN, NOW)
    assert isinstance(first, Commit) and isinstance(second, Commit)
    v = server.etcd.commit(first.write)
    assert v is not None
    server.engine.committed(first, v, NOW)
    assert server.etcd.commit(second.write) is None  # same expected revision: compare fails
    held = server.etcd.leases[("lan", IP100)]
    final = server.engine.commit_failed(second, NOW, held)
    assert isinstance(final, Reply) and final.outcome == "ack-refreshed"
    assert final.out.message.yiaddr == IP100


def test_server_id_from_config_is_ours() -> None:
    extra = IPv4Address("10.0.0.250")
    server = Server(site_scopes(), config=EngineConfig("spoke-a", server_ids=frozenset({extra})))
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    ex = server.talk(c, c.select_other(extra, IP100), LAN, NOW)
    assert ex.committed and c.address == IP100


def test_reservation_wins_over_earlier_dynamic_binding() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    assert server.dora(c, LAN, NOW) == IP100
    res = (Reservation(RES_IP, hw_address=mac(1)),)
    server.engine.set_scopes(site_scopes(reservations=res))
    assert server.dora(c, LAN, NOW + 10) == RES_IP


def test_binding_records_hostname_and_hw() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    req = c.select()
    req = replace(req, options={**req.options, Opt.HOSTNAME: b"laptop"})
    ex = server.handle(req, LAN, NOW)
    assert isinstance(ex.decision, Commit)
    assert ex.decision.write.binding.hostname == "laptop"
    assert ex.decision.write.binding.hw_address == mac(1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"node": ""},
        {"node": "a", "offer_lifetime": 0},
        {"node": "a", "early_renew_fraction": 1.0},
        {"node": "a", "decline_probation": -1},
    ],
)
def test_engine_config_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EngineConfig(**kwargs)  # type: ignore[arg-type]
