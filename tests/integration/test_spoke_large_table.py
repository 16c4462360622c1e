"""A spoke with a big stored table starts with the shipped session TTL (issue 15).

100,000 bindings are stored (transactions of 128 puts) in a pool of 131,072 addresses (2,048
blocks); a standalone spoke on loopback with `session_ttl: 3` must load them, claim every block,
keep its etcd session all along (a start that holds the event loop longer than the TTL loses it
and dies with EtcdLeaseNotFound when it registers), serve a DORA and hold every binding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from hubspoke.model import BindingState, Pool, Scope
from hubspoke.states import State
from hubspoke.values import decode_binding
from spoke.config import (
    ClusterConfig,
    DhcpConfig,
    EtcdConfig,
    FailoverConfig,
    LogConfig,
    Mode,
    SpokeConfig,
    TracingConfig,
)
from spoke.runtime import Spoke
from tests.lab.bulkleases import store_bindings
from tests.lab.etcd import EtcdServer, free_udp_port, wait_until
from tests.lab.loopspoke import discover, request

NODE = "big-spoke"
COUNT = 100_000
FIRST = IPv4Address("127.64.0.0")
LAST = IPv4Address("127.65.255.255")  # 131,072 addresses
CLIENT = b"\x01\x01" + bytes([2, 0, 0, 0, 0, 1])  # the client key of `discover(1)`


async def test_spoke_with_100k_bindings_keeps_its_session_and_serves(
    etcd: EtcdClient, etcd_server: EtcdServer, key_prefix: bytes, tmp_path: Path
) -> None:
    root = key_prefix.decode().rstrip("/")
    keys = Keys(root)
    await store_bindings(etcd, keys, "big", FIRST, COUNT, node=NODE)
    scope = Scope(
        "big",
        IPv4Network("127.0.0.0/8"),
        (Pool(FIRST, LAST),),
        lease_time=600,
        interfaces=("lo",),
    )
    port = free_udp_port()
    cfg = SpokeConfig(
        node=NODE,
        etcd=EtcdConfig(etcd_server.client_config(), root),
        dhcp=DhcpConfig(interfaces=("lo",), port=port, client_port=free_udp_port()),
        metrics=None,
        tracing=TracingConfig(),
        log=LogConfig(),
        mode=Mode.STANDALONE,
        cluster=ClusterConfig(session_ttl=3),
        failover=FailoverConfig(journal=tmp_path / f"{NODE}.journal"),
        scopes=(scope,),
    )
    ready = tmp_path / "ready"
    spoke = Spoke(cfg, ready_file=ready)
    stop = asyncio.Event()
    task = asyncio.create_task(spoke.run(stop))
    try:

        async def is_ready() -> bool:
            assert not task.done(), task.exception() or "the spoke stopped"
            return ready.exists()

        await wait_until(is_ready, within=45.0)
        parts = spoke.parts
        assert parts is not None
        session = parts.failover.session
        assert session.is_alive and parts.failover.state is State.NORMAL
        member = await etcd.get(keys.member(NODE))
        assert member is not None and member.lease == session.lease_id
        assert spoke.table.count_by_state("big") == {BindingState.BOUND: COUNT}
        assert spoke.table.get("big", IPv4Address(int(FIRST) + COUNT - 1)) is not None
        assert parts.blocks == 2048

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(discover(1), ("127.0.0.1", port))

            async def offered() -> bool:
                return spoke.counters.offers.get("big", 0) == 1

            await wait_until(offered, within=10.0)
            offer = spoke.table.offer_for("big", CLIENT, 0.0)
            assert offer is not None
            assert int(offer.ip) == int(FIRST) + COUNT  # the first never-used address
            client.sendto(request(1, offer.ip), ("127.0.0.1", port))

            async def acked(n: int) -> bool:
                return spoke.counters.acks.get("big", 0) == n

            await wait_until(partial(acked, 1), within=10.0)
        stored = await etcd.get(keys.lease("big", offer.ip))
        assert stored is not None
        assert decode_binding(stored.value).client_key == CLIENT
        assert (await etcd.lease_time_to_live(session.lease_id)).ttl > 0
        assert not task.done()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20.0)
