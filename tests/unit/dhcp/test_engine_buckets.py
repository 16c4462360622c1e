"""Engine bucket filter: who answers what in a cluster (docs/cluster.md, "Buckets").

Every (message kind x broadcast/unicast x mine/not mine) pair: requests every server hears are
answered only by the client's bucket owner; SELECTING by the named server; unicast RENEWING and
INFORM by the server they were sent to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

import pytest

from hubspoke.rfc3074 import client_bucket
from spoke.assign.buckets import BucketFilter, bucket_of_message
from spoke.dhcp.decisions import Commit, Decision, Drop, Ingress, Reply, needs_bucket
from spoke.dhcp.engine import Engine, EngineConfig
from spoke.dhcp.message import Message, Op
from tests.lab.scripted_client import LAN, ScriptedClient, Server, mac, site_scopes

NOW = 1_700_000_000.0
OTHER_SERVER = IPv4Address("10.0.0.3")


@dataclass
class Switch:
    """An `is_mine` the test flips: every client is ours, or nobody is."""

    mine: bool = True

    def __call__(self, msg: Message) -> bool:
        return self.mine


def cluster_server(switch: Switch) -> Server:
    server = Server(site_scopes())
    server.engine = Engine(
        EngineConfig(node="spoke-a"), site_scopes(), server.table, is_mine=switch
    )
    return server


def bound_client(server: Server, n: int) -> ScriptedClient:
    c = ScriptedClient(mac(n))
    assert server.dora(c, LAN, NOW) is not None
    return c


def late(c: ScriptedClient) -> float:
    """A time past the early-renewal window, so a renewal is a real commit."""
    assert c.lease is not None
    return NOW + c.lease * 0.6


# (name, builds the request from a bound client, the time to send it at)
Build = Callable[[ScriptedClient], Message]
KINDS: dict[str, Build] = {
    "discover": lambda c: c.discover(),
    "init-reboot": lambda c: c.init_reboot(c.address or IPv4Address("10.0.0.100")),
    "renew-or-rebind": lambda c: c.renew(),
    "inform": lambda c: c.inform(IPv4Address("10.0.0.77")),
    "select-us": lambda c: c.select_other(LAN.server_ip, c.address or IPv4Address("10.0.0.100")),
    "select-other": lambda c: c.select_other(OTHER_SERVER, IPv4Address("10.0.0.150")),
}

# kind, broadcast -> does the bucket filter apply?
FILTERED = {
    ("discover", True): True,
    ("discover", False): True,
    ("init-reboot", True): True,
    ("init-reboot", False): True,
    ("renew-or-rebind", True): True,  # REBINDING
    ("renew-or-rebind", False): False,  # RENEWING, unicast to us
    ("inform", True): True,
    ("inform", False): False,
    ("select-us", True): False,
    ("select-us", False): False,
    ("select-other", True): False,
    ("select-other", False): False,
}


@pytest.mark.parametrize("mine", [True, False])
@pytest.mark.parametrize(("kind", "broadcast"), sorted(FILTERED))
def test_who_answers(kind: str, broadcast: bool, mine: bool) -> None:
    switch = Switch(mine=True)
    server = cluster_server(switch)
    c = bound_client(server, 1)
    switch.mine = mine
    msg = KINDS[kind](c)
    ingress = replace(LAN, broadcast=broadcast)
    screened = server.engine.screen(msg, ingress)
    decision = server.engine.handle(msg, ingress, late(c))
    assert needs_bucket(msg, ingress) is FILTERED[(kind, broadcast)]
    # What the runtime drops before tracing is exactly what the engine would decide.
    assert screened is None or screened == decision
    if FILTERED[(kind, broadcast)] and not mine:
        assert decision == Drop("not-my-bucket")
        assert screened == decision
        return
    assert decision != Drop("not-my-bucket")
    expected: dict[str, type[Decision]] = {
        "discover": Reply,
        "init-reboot": Commit,
        "renew-or-rebind": Commit,
        "inform": Reply,
        "select-us": Commit,
        "select-other": Drop,
    }
    assert isinstance(decision, expected[kind])
    if kind == "select-other":
        assert decision == Drop("other-server-selected")
        assert screened == decision  # we hold no offer for the client: nothing to release
    else:
        assert screened is None


@pytest.mark.parametrize("mine", [True, False])
def test_selecting_another_server_releases_our_offer(mine: bool) -> None:
    """A client we offered to that picks another server: `screen` lets the REQUEST through
    (even once the client is no longer in our buckets), and serving it releases our offer."""
    switch = Switch(mine=True)
    server = cluster_server(switch)
    c = ScriptedClient(mac(21))
    discover = c.discover()
    key = discover.client_key
    offer = server.engine.handle(discover, LAN, NOW)
    assert isinstance(offer, Reply)
    offered = offer.out.message.yiaddr
    assert server.table.offer_for("lan", key, NOW) is not None
    switch.mine = mine
    msg = c.select_other(OTHER_SERVER, IPv4Address("10.0.0.150"))
    assert server.engine.screen(msg, LAN) is None
    assert server.engine.handle(msg, LAN, NOW + 1) == Drop("other-server-selected")
    assert server.table.offer_for("lan", key, NOW + 1) is None
    assert server.table.offered("lan", offered, NOW + 1) is None
    # Nothing held any more: the same REQUEST again is screened out.
    assert server.engine.screen(msg, LAN) == Drop("other-server-selected")


def test_screen_drops_what_is_not_a_known_request() -> None:
    server = cluster_server(Switch(mine=True))
    discover = ScriptedClient(mac(22)).discover()
    reply = replace(discover, op=Op.BOOTREPLY)
    assert server.engine.screen(reply, LAN) == Drop("not-a-request")
    untyped = replace(discover, options={k: v for k, v in discover.options.items() if k != 53})
    assert server.engine.screen(untyped, LAN) == Drop("bad-request")
    assert server.engine.handle(untyped, LAN, NOW) == Drop("bad-request")


@pytest.mark.parametrize("broadcast", [True, False])
def test_relayed_request_counts_as_broadcast(broadcast: bool) -> None:
    """A relay forwards to every server: a relayed REBINDING is the bucket owner's."""
    switch = Switch(mine=False)
    server = cluster_server(switch)
    c = ScriptedClient(mac(9), giaddr=IPv4Address("10.1.0.1"))
    msg = c.renew(IPv4Address("10.1.0.15"))
    ingress = replace(LAN, broadcast=broadcast)
    assert needs_bucket(msg, ingress)
    assert server.engine.handle(msg, ingress, NOW) == Drop("not-my-bucket")


@pytest.mark.parametrize(
    ("with_server_id", "broadcast", "filtered"),
    [(True, True, False), (True, False, False), (False, True, True), (False, False, False)],
)
def test_decline_and_release_follow_the_server_id(
    with_server_id: bool, broadcast: bool, filtered: bool
) -> None:
    c = ScriptedClient(mac(10))
    sid = LAN.server_ip if with_server_id else None
    decline = c.decline(IPv4Address("10.0.0.100"), sid or LAN.server_ip)
    if sid is None:
        decline = replace(decline, options={k: v for k, v in decline.options.items() if k != 54})
    assert needs_bucket(decline, replace(LAN, broadcast=broadcast)) is filtered


def test_standalone_engine_answers_everyone() -> None:
    server = Server(site_scopes())  # no is_mine
    c = ScriptedClient(mac(11))
    decision = server.engine.handle(c.discover(), LAN, NOW)
    assert isinstance(decision, Reply) and decision.outcome == "offer"
    assert decision.scope == "lan"


def test_ingress_defaults_to_broadcast() -> None:
    assert Ingress("eth0", IPv4Address("10.0.0.2")).broadcast is True


@pytest.mark.parametrize("client_id", [None, b"\x01\xaa\xbb\xcc\xdd\xee\xff", b"host-17"])
def test_bucket_filter_hashes_client_id_else_chaddr(client_id: bytes | None) -> None:
    c = ScriptedClient(mac(12), client_id=client_id)
    msg = c.discover()
    bucket = client_bucket(client_id, mac(12))
    assert bucket_of_message(msg) == bucket
    assert BucketFilter(frozenset({bucket}))(msg)
    assert not BucketFilter(frozenset(range(256)) - {bucket})(msg)
    assert not BucketFilter()(msg)


def test_bucket_filter_spreads_clients_over_owners() -> None:
    """Two spokes splitting the buckets: each client answered by exactly one of them."""
    low, high = BucketFilter(frozenset(range(128))), BucketFilter(frozenset(range(128, 256)))
    a = cluster_server(Switch())
    a.engine = Engine(EngineConfig(node="spoke-a"), site_scopes(), a.table, is_mine=low)
    b = Server(site_scopes())
    b.engine = Engine(EngineConfig(node="spoke-b"), site_scopes(), b.table, is_mine=high)
    answered = {"a": 0, "b": 0}
    for n in range(40):
        msg = ScriptedClient(mac(100 + n)).discover()
        da, db = a.engine.handle(msg, LAN, NOW), b.engine.handle(msg, LAN, NOW)
        assert (da == Drop("not-my-bucket")) != (db == Drop("not-my-bucket"))
        answered["a" if isinstance(da, Reply) else "b"] += 1
    assert answered["a"] > 0 and answered["b"] > 0
