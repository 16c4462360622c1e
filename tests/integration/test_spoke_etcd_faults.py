"""A real `Spoke` against a real etcd that fails under it: its session revoked while it lives,
and etcd frozen (SIGSTOP: connections stay open, every call hangs) with a commit in flight.

docs/cluster.md, "Why no address is bound twice": a commit of unknown outcome keeps its address
held for its client (R6); a hung etcd is detected by the commit's deadline and the spoke serves
new clients from the journal; a session found gone leads through RECOVER to a new one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from hubspoke.assign import NUM_BUCKETS, BlockRecord, BucketMap, Member
from hubspoke.blocks import cut_blocks
from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from hubspoke.model import Pool, Scope
from hubspoke.scopes.store import create_scope
from hubspoke.states import State
from hubspoke.values import decode_binding
from spoke.config import FailoverConfig
from spoke.dhcp.message import MessageType, Opt
from spoke.runtime import Spoke
from tests.lab.etcd import EtcdServer, free_udp_port, wait_until
from tests.lab.loopspoke import (
    NODE,
    discover,
    from_client,
    request,
    running_spoke,
)

DOC = {
    "name": "lan",
    "subnet": "127.0.0.0/8",
    "pools": ["127.0.6.0-127.0.6.63"],
    "interfaces": ["lo"],
}


def key_of(n: int) -> bytes:
    return b"\x01\x01" + bytes([2, 0, 0, 0, 0, n])


async def assign_everything(etcd: EtcdClient, keys: Keys) -> None:
    await create_scope(etcd, keys, DOC)
    pool = Pool(IPv4Address("127.0.6.0"), IPv4Address("127.0.6.63"))
    scope = Scope("lan", IPv4Network("127.0.0.0/8"), (pool,))
    for block in cut_blocks(scope):
        await etcd.put(keys.block("lan", block.block_id), BlockRecord(owner=NODE).encode())
    await etcd.put(keys.buckets(), BucketMap((NODE,) * NUM_BUCKETS).encode())


def discover_asking(n: int, ip: IPv4Address) -> bytes:
    """A DISCOVER from client `n` asking for `ip` (option 50)."""
    return from_client(
        n, {Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER]), Opt.REQUESTED_ADDRESS: ip.packed}
    )


async def dora(
    spoke: Spoke, sock: socket.socket, port: int, n: int, asking: IPv4Address | None = None
) -> IPv4Address:
    """DISCOVER, then REQUEST the offered address; waits for the offer, not for the ACK."""
    before = spoke.counters.offers.get("lan", 0)
    sock.sendto(discover(n) if asking is None else discover_asking(n, asking), ("127.0.0.1", port))

    async def offered() -> bool:
        return spoke.counters.offers.get("lan", 0) > before

    await wait_until(offered)
    offer = spoke.table.offer_for("lan", key_of(n), 0.0)
    assert offer is not None
    sock.sendto(request(n, offer.ip), ("127.0.0.1", port))
    return offer.ip


async def acks(spoke: Spoke, n: int) -> None:
    async def enough() -> bool:
        return spoke.counters.acks.get("lan", 0) >= n

    await wait_until(enough, within=20.0)


async def test_a_revoked_session_comes_back_without_a_restart(
    etcd: EtcdClient, etcd_server: EtcdServer, key_prefix: bytes, tmp_path: Path
) -> None:
    root = key_prefix.decode().rstrip("/")
    keys = Keys(root)
    await assign_everything(etcd, keys)
    port = free_udp_port()
    async with running_spoke(etcd_server, root, port, tmp_path) as spoke:
        kv = await etcd.get(keys.member(NODE))
        assert kv is not None
        old_lease = kv.lease
        await etcd.lease_revoke(old_lease)  # what the hub's crash probe does

        async def registered_again() -> bool:
            kv = await etcd.get(keys.member(NODE))
            failover = spoke.failover
            return (
                kv is not None
                and kv.lease not in (0, old_lease)
                and failover is not None
                and failover.state is State.NORMAL
            )

        await wait_until(registered_again, within=15.0)
        assert spoke.failover is not None
        states = [t.target for t in spoke.failover.transitions]
        assert State.RECOVER in states
        kv = await etcd.get(keys.member(NODE))
        assert kv is not None and Member.decode(kv.value).lease == kv.lease
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await dora(spoke, sock, port, 1)
            await acks(spoke, 1)


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of this test's own: it gets frozen."""
    server = EtcdServer()
    server.start()
    try:
        yield server
    finally:
        pid = server.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        server.close()


async def test_a_frozen_etcd_holds_the_unknown_commit_and_the_journal_serves(
    own_etcd: EtcdServer, tmp_path: Path
) -> None:
    root = "/hubspoke-freeze"
    keys = Keys(root)
    etcd = await EtcdClient.connect(own_etcd.client_config())
    try:
        await assign_everything(etcd, keys)
        port = free_udp_port()
        failover = FailoverConfig(
            interrupted_after=1.0, max_interrupted=30.0, mclt=60, journal=tmp_path / "j"
        )
        async with running_spoke(
            own_etcd, root, port, tmp_path, failover=failover, offer_lifetime=1.0
        ) as spoke:
            assert spoke.failover is not None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                await dora(spoke, sock, port, 1)
                await acks(spoke, 1)  # NORMAL: through etcd
                pid = own_etcd.pid
                assert pid is not None
                # client 2 is offered an address; etcd freezes; its REQUEST's commit hangs
                sock.sendto(discover(2), ("127.0.0.1", port))

                async def offered_2() -> bool:
                    return spoke.table.offer_for("lan", key_of(2), 0.0) is not None

                await wait_until(offered_2)
                offer2 = spoke.table.offer_for("lan", key_of(2), 0.0)
                assert offer2 is not None
                os.kill(pid, signal.SIGSTOP)
                try:
                    sock.sendto(request(2, offer2.ip), ("127.0.0.1", port))

                    async def interrupted() -> bool:
                        return spoke.failover is not None and spoke.failover.fsm.must_journal

                    await wait_until(interrupted, within=5.0)

                    async def held() -> bool:
                        return spoke.table.unknown_holder("lan", offer2.ip) == key_of(2)

                    await wait_until(held, within=5.0)
                    await asyncio.sleep(1.5)  # client 2's offer hold has lapsed by now
                    # client 3 asks for client 2's address: never offered it, served another
                    ip3 = await dora(spoke, sock, port, 3, asking=offer2.ip)
                    assert ip3 != offer2.ip
                    await acks(spoke, 2)  # from the journal, while etcd is frozen
                    assert spoke.counters.acks["lan"] == 2
                finally:
                    os.kill(pid, signal.SIGCONT)

                async def normal_again() -> bool:
                    return spoke.failover is not None and spoke.failover.state is State.NORMAL

                await wait_until(normal_again, within=20.0)
                assert spoke.table.unknown_holder("lan", offer2.ip) is None
                assert spoke.failover.duplicates == 0
                kv3 = await etcd.get(keys.lease("lan", ip3))
                assert kv3 is not None and decode_binding(kv3.value).client_key == key_of(3)
                kv2 = await etcd.get(keys.lease("lan", offer2.ip))
                assert kv2 is not None and decode_binding(kv2.value).client_key == key_of(2)
    finally:
        await etcd.close()
