"""The hub's lease lookups (by IP, MAC, client id) against a real hub process and real etcd.

The hub notes which bindings changed as they commit and decodes them when a lookup comes: so
every lookup must see exactly what etcd holds at that moment, across puts, overwrites (a binding
that changes client) and deletes, and across more changes than one catch-up slice holds.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

import grpc  # type: ignore[import-untyped]

from hub.api import view as hub_view
from hub.main import run_hub
from hubspoke.api.hubspoke.v1 import management_pb2 as mpb
from hubspoke.api.hubspoke.v1 import management_pb2_grpc as mgrpc
from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from hubspoke.model import Binding, BindingState
from hubspoke.values import encode_binding
from tests.lab.etcd import EtcdServer, free_port, wait_until
from tests.lab.hubproc import hub_config

SCOPE = {
    "name": "lan",
    "subnet": "10.78.0.0/16",
    "pools": ["10.78.1.0-10.78.20.255"],
    "interfaces": ["lo"],
}


def binding(n: int, client: int) -> Binding:
    mac = bytes([2, 0, 0, 0, client >> 8, client & 0xFF])
    return Binding(
        scope="lan",
        ip=IPv4Address("10.78.1.0") + n,
        state=BindingState.BOUND,
        client_key=b"\x01" + mac,
        hw_address=mac,
        start=1000.0,
        expires=2000.0,
        node="spoke-1",
    )


def mac_text(client: int) -> str:
    return f"02:00:00:00:{client >> 8:02x}:{client & 0xFF:02x}"


async def test_lookups_see_what_etcd_holds(
    etcd: EtcdClient, etcd_server: EtcdServer, key_prefix: bytes, monkeypatch: object
) -> None:
    monkeypatch.setattr(hub_view, "CATCH_UP_SLICE", 7)  # type: ignore[attr-defined]
    root = key_prefix.decode().rstrip("/")
    keys = Keys(root)
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_hub(hub_config("hub-a", etcd_server, root, port=port, scopes=[SCOPE]), stop)
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    leases = mgrpc.LeaseServiceStub(channel)

    async def by_mac(client: int) -> list[str]:
        found = await leases.GetLease(mpb.GetLeaseRequest(mac=mac_text(client)))
        return [x.ip for x in found.leases]

    async def by_ip(n: int) -> list[str]:
        ip = str(IPv4Address("10.78.1.0") + n)
        found = await leases.GetLease(mpb.GetLeaseRequest(ip=ip))
        return [x.hw_address for x in found.leases]

    try:

        async def serving() -> bool:
            assert not task.done(), task
            try:
                await by_mac(0)
            except grpc.aio.AioRpcError:
                return False
            return True

        await wait_until(serving, within=20)
        # 50 bindings (more than seven slices), looked up after they all committed
        for n in range(50):
            await etcd.put(keys.lease("lan", binding(n, n).ip), encode_binding(binding(n, n)))

        async def all_seen() -> bool:
            return await by_mac(49) == ["10.78.1.49"]

        await wait_until(all_seen, within=10)
        assert [await by_mac(n) for n in range(50)] == [
            [str(IPv4Address("10.78.1.0") + n)] for n in range(50)
        ]
        # An address moves to another client; another is freed; a client holds two addresses.
        await etcd.put(keys.lease("lan", binding(3, 1000).ip), encode_binding(binding(3, 1000)))
        await etcd.delete(keys.lease("lan", binding(4, 4).ip))
        await etcd.put(keys.lease("lan", binding(60, 5).ip), encode_binding(binding(60, 5)))

        async def changes_seen() -> bool:
            return await by_mac(1000) == ["10.78.1.3"]

        await wait_until(changes_seen, within=10)
        assert await by_mac(3) == []
        assert await by_mac(4) == []
        assert await by_ip(4) == []
        assert await by_ip(3) == [mac_text(1000)]
        assert await by_mac(5) == ["10.78.1.5", "10.78.1.60"]
    finally:
        await channel.close()
        stop.set()
        await asyncio.wait_for(task, 20)
