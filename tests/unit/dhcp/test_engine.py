"""Engine: DISCOVER/OFFER/REQUEST/ACK, reply fields, options, lease times, scope selection."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from spoke.dhcp.decisions import Commit, CommitKind, Drop, Ingress, Reply
from spoke.dhcp.message import BROADCAST_FLAG, ZERO, MessageType, Op, Opt
from spoke.dhcp.optionset import lease_time, timers
from spoke.dhcp.reply import DestKind
from tests.lab.scripted_client import (
    DNS,
    LAN,
    RELAY_B,
    RELAY_C,
    ROUTER,
    UPLINK,
    ScriptedClient,
    Server,
    mac,
    site_scopes,
)

NOW = 1_700_000_000.0


@pytest.fixture
def server() -> Server:
    return Server(site_scopes())


def test_dora_binds_and_commits_before_ack(server: Server) -> None:
    c = ScriptedClient(mac(1))
    offer = server.talk(c, c.discover(), LAN, NOW)
    assert isinstance(offer.decision, Reply) and offer.decision.outcome == "offer"
    o = offer.decision.out.message
    assert o.message_type is MessageType.OFFER and o.yiaddr == IPv4Address("10.0.0.100")
    assert not server.etcd.writes  # an offer needs no write
    ack = server.talk(c, c.select(), LAN, NOW + 1)
    assert isinstance(ack.decision, Commit) and ack.committed
    assert ack.decision.kind is CommitKind.ACK
    w = ack.decision.write
    assert w.expected is None and w.fence is not None and w.ip in w.fence[0]
    assert w.binding.expires == NOW + 1 + 3600 and w.binding.node == "spoke-a"
    assert c.address == IPv4Address("10.0.0.100") and c.lease == 3600
    entry = server.table.get("lan", c.address)
    assert entry is not None and entry[0].client_key == c.discover().client_key
    assert server.table.offer_for("lan", c.discover().client_key, NOW + 1) is None


def test_reply_header_copies_request_fields(server: Server) -> None:
    c = ScriptedClient(mac(2), broadcast=True)
    req = c.discover()
    out = server.handle(req, LAN, NOW).sent
    assert out is not None
    m = out.message
    assert m.op is Op.BOOTREPLY and m.xid == req.xid and m.flags == BROADCAST_FLAG
    assert (m.chaddr, m.htype, m.hlen, m.giaddr) == (req.chaddr, 1, 6, ZERO)
    assert m.server_id == LAN.server_ip and out.interface == "eth0"
    assert out.dest.kind is DestKind.BROADCAST


def test_offer_unicast_to_hardware_without_broadcast_flag(server: Server) -> None:
    c = ScriptedClient(mac(3))
    out = server.handle(c.discover(), LAN, NOW).sent
    assert out is not None and out.dest.kind is DestKind.HARDWARE
    assert out.dest.mac == mac(3) and out.dest.ip == out.message.yiaddr


def test_offer_options_follow_request_list(server: Server) -> None:
    c = ScriptedClient(mac(4), params=(42, 15, 1))
    m = server.handle(c.discover(), LAN, NOW).sent
    assert m is not None
    opts = m.message.options
    # requested ones in the client's order first, then subnet mask/router/DNS/domain always
    assert list(opts)[:6] == [53, 54, 51, 58, 59, 42]
    assert opts[Opt.SUBNET_MASK] == IPv4Address("255.255.255.0").packed
    assert opts[Opt.ROUTER] == ROUTER.packed
    assert opts[Opt.DNS_SERVERS] == b"".join(d.packed for d in DNS)
    assert opts[Opt.DOMAIN_NAME] == b"example.test"
    assert opts[42] == IPv4Address("10.0.0.123").packed


def test_unrequested_extra_option_not_sent(server: Server) -> None:
    c = ScriptedClient(mac(5), params=(1, 3))
    m = server.handle(c.discover(), LAN, NOW).sent
    assert m is not None and 42 not in m.message.options


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, 3600), (60, 300), (300, 300), (1800, 1800), (7200, 7200), (86400, 7200)],
)
def test_requested_lease_time_is_clamped(
    server: Server, requested: int | None, expected: int
) -> None:
    c = ScriptedClient(mac(6))
    offer = server.talk(c, c.discover(lease=requested), LAN, NOW)
    assert offer.sent is not None and offer.sent.message.lease_time == expected
    ack = server.talk(c, c.select(lease=requested), LAN, NOW)
    assert ack.sent is not None and c.lease == expected
    t1 = int.from_bytes(ack.sent.message.options[Opt.RENEWAL_TIME], "big")
    t2 = int.from_bytes(ack.sent.message.options[Opt.REBINDING_TIME], "big")
    assert 0 < t1 < t2 < expected


@pytest.mark.parametrize(
    ("t1", "t2", "lease"),
    [(None, None, 3600), (10, 20, 3600), (5000, 6000, 3600), (3000, 1000, 3600), (None, None, 3)],
)
def test_timers_ordered(t1: int | None, t2: int | None, lease: int) -> None:
    scope = site_scopes(t1=t1, t2=t2)[0]
    a, b = timers(scope, lease)
    assert 0 < a < b < lease


def test_lease_time_helper_bounds() -> None:
    scope = site_scopes()[0]
    assert lease_time(scope, 0) == scope.min_lease_time
    assert lease_time(scope, 2**32 - 1) == scope.max_lease_time


def test_second_discover_gets_same_offer(server: Server) -> None:
    c = ScriptedClient(mac(7))
    first = server.handle(c.discover(), LAN, NOW).sent
    again = server.handle(c.discover(), LAN, NOW + 5).sent
    other = server.handle(ScriptedClient(mac(8)).discover(), LAN, NOW + 5).sent
    assert first is not None and again is not None and other is not None
    assert first.message.yiaddr == again.message.yiaddr != other.message.yiaddr


def test_offer_expires_after_lifetime(server: Server) -> None:
    a, b = ScriptedClient(mac(9)), ScriptedClient(mac(10))
    first = server.handle(a.discover(), LAN, NOW).sent
    assert first is not None
    later = server.handle(b.discover(), LAN, NOW + 31).sent
    assert later is not None and later.message.yiaddr == first.message.yiaddr


def test_requested_address_honoured_when_free(server: Server) -> None:
    c = ScriptedClient(mac(11))
    want = IPv4Address("10.0.0.150")
    assert server.dora(c, LAN, NOW, requested=want) == want


@pytest.mark.parametrize("want", ["10.0.0.50", "10.1.0.12", "10.0.0.255"])
def test_requested_address_outside_pool_ignored(server: Server, want: str) -> None:
    c = ScriptedClient(mac(12))
    assert server.dora(c, LAN, NOW, requested=IPv4Address(want)) == IPv4Address("10.0.0.100")


def test_request_for_other_server_forgets_offer(server: Server) -> None:
    a = ScriptedClient(mac(13))
    offer = server.talk(a, a.discover(), LAN, NOW)
    assert offer.sent is not None
    ip = offer.sent.message.yiaddr
    d = server.handle(a.select_other(IPv4Address("10.0.0.3"), ip), LAN, NOW + 1)
    assert d.final == Drop("other-server-selected")
    b = ScriptedClient(mac(14))
    assert server.dora(b, LAN, NOW + 2) == ip  # the address went back to the free set


def test_request_for_address_not_offered_is_naked(server: Server) -> None:
    c = ScriptedClient(mac(15))
    server.talk(c, c.discover(), LAN, NOW)
    msg = c.select_other(LAN.server_ip, IPv4Address("10.0.0.180"))
    ex = server.talk(c, msg, LAN, NOW)
    assert isinstance(ex.final, Reply) and ex.final.outcome == "nak"
    nak = ex.final.out.message
    assert nak.message_type is MessageType.NAK and nak.yiaddr == ZERO
    assert nak.server_id == LAN.server_ip and Opt.MESSAGE in nak.options
    assert not {Opt.LEASE_TIME, Opt.RENEWAL_TIME, Opt.REBINDING_TIME} & set(nak.options)
    assert ex.final.out.dest.kind is DestKind.BROADCAST


def test_a_nak_through_a_relay_carries_the_broadcast_flag(server: Server) -> None:
    """RFC 2131 4.3.2: with giaddr set, the server MUST set the broadcast bit in the DHCPNAK
    so that the relay broadcasts it; the client's own flags are kept otherwise."""
    c = ScriptedClient(mac(19), giaddr=RELAY_B)
    ex = server.talk(c, c.init_reboot(IPv4Address("10.9.9.99")), UPLINK, NOW)
    assert isinstance(ex.final, Reply) and ex.final.outcome == "nak"
    nak = ex.final.out.message
    assert not c.init_reboot(IPv4Address("10.9.9.99")).is_broadcast
    assert nak.is_broadcast and nak.giaddr == RELAY_B
    assert ex.final.out.dest.kind is DestKind.RELAY
    direct = ScriptedClient(mac(20))
    lan_nak = server.talk(direct, direct.init_reboot(IPv4Address("10.9.9.250")), LAN, NOW)
    assert isinstance(lan_nak.final, Reply) and lan_nak.final.outcome == "nak"
    assert not lan_nak.final.out.message.is_broadcast  # broadcast by address, flags as sent


def test_request_after_offer_lapsed_still_granted_when_free(server: Server) -> None:
    c = ScriptedClient(mac(16))
    server.talk(c, c.discover(), LAN, NOW)
    ex = server.talk(c, c.select(), LAN, NOW + 120)
    assert ex.committed and c.address == IPv4Address("10.0.0.100")


def test_request_after_offer_lapsed_and_taken_is_naked(server: Server) -> None:
    a, b = ScriptedClient(mac(17)), ScriptedClient(mac(18))
    server.talk(a, a.discover(), LAN, NOW)
    assert server.dora(b, LAN, NOW + 60) == IPv4Address("10.0.0.100")
    ex = server.talk(a, a.select(), LAN, NOW + 61)
    assert isinstance(ex.final, Reply) and ex.final.outcome == "nak" and not ex.committed


# -- scope selection -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("giaddr", "ingress", "scope", "first"),
    [
        (ZERO, LAN, "lan", "10.0.0.100"),
        (RELAY_B, UPLINK, "office", "10.1.0.10"),
        (IPv4Address("10.1.0.77"), UPLINK, "office", "10.1.0.10"),
        (RELAY_C, UPLINK, "lab", "10.2.0.10"),
        (RELAY_C, LAN, "lab", "10.2.0.10"),
    ],
)
def test_scope_selection(
    server: Server, giaddr: IPv4Address, ingress: Ingress, scope: str, first: str
) -> None:
    c = ScriptedClient(mac(20), giaddr=giaddr)
    assert server.dora(c, ingress, NOW) == IPv4Address(first)
    entry = server.table.by_client(scope, c.discover().client_key)
    assert entry is not None and entry[0].scope == scope


@pytest.mark.parametrize("broadcast", [False, True])
def test_a_relayed_client_renewing_by_unicast_is_served_from_its_own_scope(
    server: Server, broadcast: bool
) -> None:
    """RFC 2131 4.3.2: a RENEWING request reaches the server through no relay (giaddr 0),
    possibly routed from another network: its scope is the one containing ciaddr."""
    relayed = ScriptedClient(mac(24), giaddr=RELAY_B)
    ip = server.dora(relayed, UPLINK, NOW)
    assert ip is not None and str(ip).startswith("10.1.")
    direct = ScriptedClient(mac(24))  # the same client, now unicasting to us on its own
    ingress = Ingress(UPLINK.interface, UPLINK.server_ip, broadcast=broadcast)
    ex = server.talk(direct, direct.renew(ip), ingress, NOW + 2000)
    if broadcast:  # a broadcast can only be from a client on the receiving link: not this one
        assert not (isinstance(ex.final, Reply) and ex.final.outcome.startswith("ack"))
    else:
        assert ex.committed or (
            isinstance(ex.final, Reply) and ex.final.outcome == "ack-early-renewal"
        )
        entry = server.table.get("office", ip)
        assert entry is not None and entry[0].client_key == direct.discover().client_key


def test_direct_by_server_ip_when_no_interface_matches() -> None:
    server = Server(site_scopes(interfaces=()))
    c = ScriptedClient(mac(21))
    assert server.dora(c, Ingress("br7", IPv4Address("10.0.0.2")), NOW) == IPv4Address("10.0.0.100")


@pytest.mark.parametrize(
    ("giaddr", "ingress"),
    [
        (IPv4Address("192.0.2.1"), UPLINK),  # unknown relay
        (ZERO, UPLINK),  # direct on an interface no scope serves
        (ZERO, Ingress("eth9", IPv4Address("198.51.100.1"))),
    ],
)
def test_no_scope_dropped(server: Server, giaddr: IPv4Address, ingress: Ingress) -> None:
    c = ScriptedClient(mac(22), giaddr=giaddr)
    assert server.handle(c.discover(), ingress, NOW).final == Drop("no-scope")


def test_relayed_reply_carries_giaddr_and_echoes_option_82(server: Server) -> None:
    info = b"\x01\x04eth3\x02\x06remote"
    c = ScriptedClient(mac(23), giaddr=RELAY_B, relay_info=info, client_id=b"\x01host-23")
    offer = server.talk(c, c.discover(), UPLINK, NOW)
    assert offer.sent is not None
    m = offer.sent.message
    assert m.giaddr == RELAY_B and m.options[Opt.RELAY_AGENT_INFO] == info
    assert list(m.options)[-1] == Opt.RELAY_AGENT_INFO
    assert m.options[Opt.CLIENT_ID] == b"\x01host-23"
    assert offer.sent.dest.kind is DestKind.RELAY and offer.sent.dest.ip == RELAY_B
    assert offer.sent.dest.port == 67
    ack = server.talk(c, c.select(), UPLINK, NOW)
    assert ack.sent is not None and ack.sent.message.options[Opt.RELAY_AGENT_INFO] == info
    assert ack.sent.dest.kind is DestKind.RELAY


@pytest.mark.parametrize(
    "mutate",
    ["bootreply", "no-type", "offer-type"],
)
def test_malformed_requests_dropped(server: Server, mutate: str) -> None:
    msg = ScriptedClient(mac(24)).discover()
    if mutate == "bootreply":
        msg = replace(msg, op=Op.BOOTREPLY)
    elif mutate == "no-type":
        msg = replace(msg, options={})
    else:
        msg = replace(msg, options={Opt.MESSAGE_TYPE: bytes([MessageType.OFFER])})
    d = server.handle(msg, LAN, NOW).final
    assert isinstance(d, Drop) and d.reason in {"not-a-request", "bad-request"}


def test_scopes_change_at_run_time(server: Server) -> None:
    scopes = site_scopes(interfaces=("eth5",))
    server.engine.set_scopes(scopes)
    c = ScriptedClient(mac(25))
    assert server.handle(c.discover(), LAN, NOW).final != Drop("no-scope")  # by server_ip
    server.engine.set_scopes(scopes[1:])
    assert server.handle(c.discover(), LAN, NOW).final == Drop("no-scope")
