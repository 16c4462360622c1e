"""Two hub processes: the elected one serves the API, the standby holds its port with health."""

from __future__ import annotations

import asyncio

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hub.config import HubConfig
from hub.main import run_hub
from hubspoke.api.hubspoke.v1 import management_pb2 as mpb
from hubspoke.api.hubspoke.v1 import management_pb2_grpc as mgrpc
from hubspoke.etcd.client import EtcdClient
from hubspoke.keys import Keys
from hubspoke.scopes.store import read_scopes
from tests.lab.etcd import EtcdServer, free_port, wait_until
from tests.lab.hubproc import hub_config


async def health_of(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
        return int(reply.status)


async def cluster_state(address: str) -> tuple[grpc.StatusCode, str]:
    async with grpc.aio.insecure_channel(address) as ch:
        try:
            state = await mgrpc.ClusterServiceStub(ch).GetClusterState(
                mpb.GetClusterStateRequest(), timeout=2
            )
        except grpc.aio.AioRpcError as e:
            return e.code(), ""
        return grpc.StatusCode.OK, state.hub_node


async def test_standby_hub_answers_health_and_takes_over(
    etcd_server: EtcdServer, key_prefix: bytes
) -> None:
    root = key_prefix.decode().rstrip("/")
    ports = {"hub-a": free_port(), "hub-b": free_port()}
    stops = {n: asyncio.Event() for n in ports}

    def cfg(node: str) -> HubConfig:
        return hub_config(node, etcd_server, root, port=ports[node])

    tasks = {"hub-a": asyncio.create_task(run_hub(cfg("hub-a"), stops["hub-a"]))}

    async def elected(node: str) -> bool:
        return await cluster_state(f"127.0.0.1:{ports[node]}") == (grpc.StatusCode.OK, node)

    try:
        await wait_until(lambda: elected("hub-a"), within=20)
        tasks["hub-b"] = asyncio.create_task(run_hub(cfg("hub-b"), stops["hub-b"]))
        standby = f"127.0.0.1:{ports['hub-b']}"

        async def standby_up() -> bool:
            try:
                return bool(await health_of(standby) == health_pb2.HealthCheckResponse.SERVING)
            except grpc.aio.AioRpcError:
                return False

        await wait_until(standby_up, within=20)
        assert (await cluster_state(standby))[0] == grpc.StatusCode.UNIMPLEMENTED
        stops["hub-a"].set()  # graceful: resigns, hub-b takes the role and the port
        await asyncio.wait_for(tasks["hub-a"], 20)
        await wait_until(lambda: elected("hub-b"), within=20)
        assert await health_of(standby) == health_pb2.HealthCheckResponse.SERVING
    finally:
        for n, task in tasks.items():
            stops[n].set()
            await asyncio.wait_for(task, 20)


async def test_a_standby_hub_seeds_its_scopes_at_first_start(
    etcd_server: EtcdServer, key_prefix: bytes
) -> None:
    """Scopes from the hub's YAML reach etcd even when another process (a hub-eligible spoke,
    here a hub without scopes) holds the election: otherwise nothing would ever be served."""
    root = key_prefix.decode().rstrip("/")
    scope: dict[str, object] = {
        "name": "lan",
        "subnet": "10.60.0.0/24",
        "pools": ["10.60.0.10-10.60.0.99"],
    }

    def cfg(node: str, scopes: list[dict[str, object]]) -> HubConfig:
        return hub_config(node, etcd_server, root, scopes=scopes)

    leader_cfg = cfg("hub-a", [])
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(run_hub(leader_cfg, stops[0]))]
    try:

        async def elected() -> bool:
            return await cluster_state(leader_cfg.role.grpc.listen) == (grpc.StatusCode.OK, "hub-a")

        await wait_until(elected, within=20)
        tasks.append(asyncio.create_task(run_hub(cfg("hub-b", [scope]), stops[1])))
        async with await EtcdClient.connect(etcd_server.client_config()) as etcd:

            async def seeded() -> bool:
                stored, _ = await read_scopes(etcd, Keys(root))
                return set(stored) == {"lan"}

            await wait_until(seeded, within=20)
        assert await elected(), "hub-a still leads: the standby seeded without the role"
    finally:
        for stop, task in zip(stops, tasks, strict=False):
            stop.set()
            await asyncio.wait_for(task, 20)
