"""A real `Spoke` in cluster mode on loopback: scopes and assignments from etcd, then serving.

The test plays the hub (scope document, bucket map, block records). The spoke registers a
`Member`, serves only the blocks and buckets it was given, and follows bucket changes.
"""

from __future__ import annotations

import asyncio
import socket
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from hubspoke.assign import NUM_BUCKETS, BlockRecord, BucketMap, Member
from hubspoke.blocks import cut_blocks
from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from hubspoke.model import Pool, Scope
from hubspoke.scopes.store import create_scope
from spoke.runtime import Spoke
from tests.lab.etcd import EtcdServer, free_udp_port, wait_until
from tests.lab.loopspoke import NODE, discover, request, running_spoke


async def test_cluster_spoke_serves_what_the_hub_assigned(
    etcd: EtcdClient, etcd_server: EtcdServer, key_prefix: bytes, tmp_path: Path
) -> None:
    root = key_prefix.decode().rstrip("/")
    keys = Keys(root)
    doc = {
        "name": "lan",
        "subnet": "127.0.0.0/8",
        "pools": ["127.0.5.0-127.0.5.255"],
        "interfaces": ["lo"],
    }
    await create_scope(etcd, keys, doc)
    pool = Pool(IPv4Address("127.0.5.0"), IPv4Address("127.0.5.255"))
    blocks = cut_blocks(Scope("lan", IPv4Network("127.0.0.0/8"), (pool,)))
    put = await etcd.put(keys.block("lan", blocks[1].block_id), BlockRecord(owner=NODE).encode())
    await etcd.put(keys.block("lan", blocks[0].block_id), BlockRecord(owner="spoke-b").encode())
    await etcd.put(keys.buckets(), BucketMap((NODE,) * NUM_BUCKETS).encode())
    port = free_udp_port()
    async with running_spoke(etcd_server, root, port, tmp_path) as spoke:
        kv = await etcd.get(keys.member(NODE))
        assert kv is not None and kv.lease != 0
        member = Member.decode(kv.value)
        assert (member.node, member.role, member.hub_eligible) == (NODE, "spoke", False)
        assert spoke.assignments is not None
        assert spoke.assignments.owned("lan") == {blocks[1]: put.revision}

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(discover(1), ("127.0.0.1", port))

            async def offered() -> bool:
                return spoke.counters.offers.get("lan", 0) == 1

            await wait_until(offered)
            offer = spoke.table.offer_for("lan", b"\x01\x01" + bytes([2, 0, 0, 0, 0, 1]), 0.0)
            assert offer is not None and offer.ip in blocks[1]

            # the hub moves every bucket away: broadcast traffic is no longer ours
            await etcd.put(keys.buckets(), BucketMap().encode())

            async def moved() -> bool:
                assert spoke.assignments is not None
                return spoke.assignments.buckets == frozenset()

            await wait_until(moved)
            client.sendto(discover(2), ("127.0.0.1", port))
            await asyncio.sleep(0.3)
            assert spoke.counters.offers.get("lan", 0) == 1
    assert await etcd.get(keys.member(NODE)) is None  # session revoked at shutdown
    assert IPv4Address("127.0.5.64") in blocks[1]


def drops(spoke: Spoke, reason: str) -> float:
    body, _ = spoke.metrics.exposition()
    for line in body.decode().splitlines():
        if line.startswith(f'hubspoke_dhcp_drops_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_overload_sheds_new_exchanges_and_finishes_started_ones(
    etcd: EtcdClient, etcd_server: EtcdServer, key_prefix: bytes, tmp_path: Path
) -> None:
    """With every commit slot taken (`max_inflight_commits`, here 1, etcd held back), a new
    DISCOVER is dropped unanswered while the REQUEST of an exchange already offered is still
    taken (up to twice the slots) and ACKed once etcd answers."""
    root = key_prefix.decode().rstrip("/")
    keys = Keys(root)
    doc = {"name": "lan", "subnet": "127.0.0.0/8", "pools": ["127.0.6.0-127.0.6.63"]}
    await create_scope(etcd, keys, doc)
    pool = Pool(IPv4Address("127.0.6.0"), IPv4Address("127.0.6.63"))
    for block in cut_blocks(Scope("lan", IPv4Network("127.0.0.0/8"), (pool,))):
        await etcd.put(keys.block("lan", block.block_id), BlockRecord(owner=NODE).encode())
    await etcd.put(keys.buckets(), BucketMap((NODE,) * NUM_BUCKETS).encode())
    port = free_udp_port()
    async with running_spoke(etcd_server, root, port, tmp_path, max_inflight_commits=1) as spoke:
        assert spoke.parts is not None
        queue = spoke.parts.commits
        held: list[tuple[Any, Any]] = []
        real_submit = queue.submit
        queue.submit = lambda write, done: held.append((write, done))  # type: ignore[method-assign]

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:

            async def offers(n: int) -> bool:
                return spoke.counters.offers.get("lan", 0) == n

            for n in (1, 2):
                client.sendto(discover(n), ("127.0.0.1", port))
                await wait_until(partial(offers, n))
            ips = {
                n: spoke.table.offer_for("lan", b"\x01\x01" + bytes([2, 0, 0, 0, 0, n]), 0.0)
                for n in (1, 2)
            }
            client.sendto(request(1, ips[1].ip), ("127.0.0.1", port))  # type: ignore[union-attr]

            async def held_count(n: int) -> bool:
                return len(held) == n

            await wait_until(partial(held_count, 1))
            assert spoke.inflight == 1
            client.sendto(discover(3), ("127.0.0.1", port))  # every slot taken: not answered

            async def shed() -> bool:
                return drops(spoke, "overload-discover") == 1

            await wait_until(shed)
            assert spoke.counters.offers.get("lan", 0) == 2
            client.sendto(request(2, ips[2].ip), ("127.0.0.1", port))  # type: ignore[union-attr]
            await wait_until(partial(held_count, 2))  # a started exchange: still taken
            assert drops(spoke, "overload") == 0

            queue.submit = real_submit  # type: ignore[method-assign]
            for write, done in held:
                real_submit(write, done)

            async def acked() -> bool:
                return spoke.counters.acks.get("lan", 0) == 2

            await wait_until(acked)
            assert spoke.inflight == 0
            client.sendto(discover(3), ("127.0.0.1", port))  # slots free again: answered
            await wait_until(partial(offers, 3))
