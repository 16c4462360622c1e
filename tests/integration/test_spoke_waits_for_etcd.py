"""A spoke started before its etcd (containers start in any order) waits for it, then serves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from spoke.config import (
    ClusterConfig,
    DhcpConfig,
    EtcdConfig,
    LogConfig,
    Mode,
    SpokeConfig,
    TracingConfig,
)
from spoke.runtime import Spoke
from tests.lab.etcd import EtcdServer, free_udp_port, wait_until

ROOT = "/hubspoke-wait-test"


def cluster_spoke(node: str, server: EtcdServer, request_timeout: float) -> SpokeConfig:
    """A cluster-mode spoke on loopback whose etcd is `server` (started or not)."""
    return SpokeConfig(
        node=node,
        etcd=EtcdConfig(server.client_config(request_timeout=request_timeout), ROOT),
        dhcp=DhcpConfig(interfaces=("lo",), port=free_udp_port(), client_port=free_udp_port()),
        metrics=None,
        tracing=TracingConfig(),
        log=LogConfig(),
        mode=Mode.CLUSTER,
        cluster=ClusterConfig(report_interval=0.2, session_ttl=3, grpc_listen="127.0.0.1:0"),
    )


async def test_spoke_started_before_etcd_waits_then_becomes_ready(tmp_path: Path) -> None:
    server = EtcdServer()  # its ports are chosen now; the process starts later
    cfg = cluster_spoke("early-spoke", server, request_timeout=1.0)
    ready = tmp_path / "ready"
    stop = asyncio.Event()
    task = asyncio.create_task(Spoke(cfg, ready_file=ready).run(stop))
    try:
        await asyncio.sleep(2.0)  # several attempts against a closed port
        assert not task.done(), task.exception() if task.done() else None
        assert not ready.exists()
        await asyncio.to_thread(server.start)

        async def is_ready() -> bool:
            return ready.exists()

        await wait_until(is_ready, within=30)
        assert json.loads(ready.read_text()) == {"node": "early-spoke"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        server.stop()


async def test_spoke_stopped_while_waiting_for_etcd_exits_cleanly(tmp_path: Path) -> None:
    server = EtcdServer()  # never started
    cfg = cluster_spoke("never-ready", server, request_timeout=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(Spoke(cfg, ready_file=tmp_path / "ready").run(stop))
    await asyncio.sleep(1.0)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 10)  # returns, raises nothing
    assert not (tmp_path / "ready").exists()
