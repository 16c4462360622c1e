"""Two hub processes in-process against the real etcd, each serving /metrics on its own port.

The elected hub scrapes as leader with its epoch; the standby as leader 0 with no cluster
gauges. A fake spoke (a `Member` on a lease of its own, plus one real report over the gRPC
report stream) makes the planner commit real moves: the scrape's counters and gauges are
checked against what etcd holds. Then the elected hub stops and the standby takes over.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from hub.api import convert as conv
from hub.api.model import ScopeUtilization, UtilizationReport
from hub.config import HubConfig
from hub.main import run_hub
from hubspoke.api.hubspoke.v1 import report_pb2_grpc as rgrpc
from hubspoke.assign import NUM_BUCKETS, BlockRecord, BucketMap, Member
from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from tests.lab.etcd import EtcdServer, free_port, wait_until
from tests.lab.hubproc import hub_config

SPOKE = "spoke-x"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        body: bytes = resp.read()
        return body.decode()


async def scrape(port: int) -> Samples:
    """Every sample of a hub's /metrics, by (name, sorted labels)."""
    text = await asyncio.to_thread(_get, port)  # urllib blocks; the server is on this loop
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape_or_none(port: int) -> Samples | None:
    try:
        return await scrape(port)
    except OSError:
        return None


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def test_hub_metrics_leader_standby_and_moves(
    etcd: EtcdClient, etcd_server: EtcdServer, key_prefix: bytes
) -> None:
    root = key_prefix.decode().rstrip("/")
    keys = Keys(root)
    api = {"hub-a": free_port(), "hub-b": free_port()}
    metrics = {"hub-a": free_port(), "hub-b": free_port()}
    stops = {n: asyncio.Event() for n in api}

    def cfg(node: str) -> HubConfig:
        return hub_config(
            node,
            etcd_server,
            root,
            port=api[node],
            planner={"interval": 0.2, "block_size": 64},
            metrics={"listen": f"127.0.0.1:{metrics[node]}"},
            scopes=[
                {
                    "name": "lan",
                    "subnet": "10.77.0.0/16",
                    "pools": ["10.77.1.0-10.77.1.255"],
                    "interfaces": ["lo"],
                }
            ],
        )

    tasks = {"hub-a": asyncio.create_task(run_hub(cfg("hub-a"), stops["hub-a"]))}
    lease = None
    try:

        async def leads(node: str) -> bool:
            assert not tasks[node].done(), tasks[node]
            got = await scrape_or_none(metrics[node])
            return got is not None and value(got, "hubspoke_hub_leader") == 1.0

        await wait_until(lambda: leads("hub-a"), within=20)
        tasks["hub-b"] = asyncio.create_task(run_hub(cfg("hub-b"), stops["hub-b"]))

        async def standby_scrapes() -> bool:
            assert not tasks["hub-b"].done(), tasks["hub-b"]
            return await scrape_or_none(metrics["hub-b"]) is not None

        await wait_until(standby_scrapes, within=20)

        a = await scrape(metrics["hub-a"])
        epoch_a = value(a, "hubspoke_hub_epoch")
        assert epoch_a is not None and epoch_a > 0
        assert value(a, "hubspoke_hub_elections_total") == 1.0
        # no spoke yet: every state at 0, nothing assigned
        assert value(a, "hubspoke_hub_spokes", state="normal") == 0.0
        assert value(a, "hubspoke_hub_spokes", state="partner-down") == 0.0
        assert value(a, "hubspoke_hub_buckets_unassigned") == float(NUM_BUCKETS)

        b = await scrape(metrics["hub-b"])
        assert value(b, "hubspoke_hub_leader") == 0.0
        assert value(b, "hubspoke_hub_epoch") == 0.0
        assert value(b, "hubspoke_hub_elections_total") == 0.0
        assert value(b, "hubspoke_hub_reports_total") == 0.0
        # a standby publishes no cluster gauges
        assert not names(b) & {
            "hubspoke_hub_spokes",
            "hubspoke_hub_buckets",
            "hubspoke_hub_buckets_unassigned",
        }

        # A spoke joins: a member record on its own session lease.
        lease = await etcd.lease_grant(60)
        member = Member(node=SPOKE, lease=lease.id, role="spoke", started=time.time())
        await etcd.put(keys.member(SPOKE), member.encode(), lease=lease.id)

        # Its initial share: every bucket, and floor(4 blocks x (1 - 0.25 reserve)) = 3 blocks.
        async def all_buckets_to_spoke() -> bool:
            got = await scrape(metrics["hub-a"])
            return (
                value(got, "hubspoke_hub_buckets", node=SPOKE) == float(NUM_BUCKETS)
                and value(got, "hubspoke_hub_moves_total", kind="GrantBlock") == 3.0
            )

        await wait_until(all_buckets_to_spoke, within=20)

        # It reports once over the real report stream.
        report = UtilizationReport(
            node=SPOKE,
            state="NORMAL",
            state_reason="",
            sent_at=time.time(),
            scopes=(ScopeUtilization("lan", bound=3, free=150, capacity=192),),
            seq=1,
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{api['hub-a']}") as ch:
            call = rgrpc.ReportServiceStub(ch).Report()
            await call.write(conv.report_to_pb(report))
            ack = await call.read()
            assert ack.seq == 1 and ack.epoch == int(epoch_a) and ack.hub_node == "hub-a"
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF

        # What etcd holds is what the counters say the planner committed.
        buckets_kv = await etcd.get(keys.buckets())
        assert buckets_kv is not None
        assert BucketMap.decode(buckets_kv.value).counts() == {SPOKE: NUM_BUCKETS}
        records = [
            BlockRecord.decode(kv.value)
            for kv in (await etcd.range_prefix(keys.blocks_prefix("lan"))).kvs
        ]
        assert len(records) == 4  # 256 addresses cut into blocks of 64
        owned = sum(1 for r in records if r.owner == SPOKE)
        assert owned == 3

        a = await scrape(metrics["hub-a"])
        assert value(a, "hubspoke_hub_leader") == 1.0
        assert value(a, "hubspoke_hub_epoch") == epoch_a
        assert value(a, "hubspoke_hub_elections_total") == 1.0
        assert value(a, "hubspoke_hub_reports_total") == 1.0
        assert value(a, "hubspoke_hub_buckets", node=SPOKE) == float(NUM_BUCKETS)
        assert value(a, "hubspoke_hub_buckets_unassigned") == 0.0
        assert value(a, "hubspoke_hub_spokes", state="normal") == 1.0
        assert value(a, "hubspoke_hub_spokes", state="startup") == 0.0
        assert value(a, "hubspoke_hub_moves_total", kind="SetBuckets") == 1.0
        assert value(a, "hubspoke_hub_moves_total", kind="CreateBlock") == float(len(records))
        assert value(a, "hubspoke_hub_moves_total", kind="GrantBlock") == float(owned)
        assert value(a, "hubspoke_hub_moves_total", kind="ReclaimBlock") == 0.0
        # the standby saw none of it
        b = await scrape(metrics["hub-b"])
        assert value(b, "hubspoke_hub_reports_total") == 0.0
        assert value(b, "hubspoke_hub_moves_total", kind="SetBuckets") == 0.0

        # The elected hub stops (resigns): the standby takes over, and scrapes as the leader.
        stops["hub-a"].set()
        await asyncio.wait_for(tasks["hub-a"], 20)
        assert await scrape_or_none(metrics["hub-a"]) is None  # its server is gone
        await wait_until(lambda: leads("hub-b"), within=20)

        async def sees_the_spoke() -> bool:
            got = await scrape(metrics["hub-b"])
            return value(got, "hubspoke_hub_buckets", node=SPOKE) == float(NUM_BUCKETS)

        await wait_until(sees_the_spoke, within=10)
        b = await scrape(metrics["hub-b"])
        epoch_b = value(b, "hubspoke_hub_epoch")
        assert epoch_b is not None and epoch_b > epoch_a
        assert value(b, "hubspoke_hub_elections_total") == 1.0
        assert value(b, "hubspoke_hub_spokes", state="startup") == 1.0  # no report to it yet
        assert value(b, "hubspoke_hub_buckets_unassigned") == 0.0
        assert value(b, "hubspoke_hub_moves_total", kind="SetBuckets") == 0.0  # nothing to move
    finally:
        for n, task in tasks.items():
            stops[n].set()
            await asyncio.wait_for(task, 20)
        if lease is not None:
            await etcd.lease_revoke(lease.id)
