"""A real `Spoke` in cluster mode on loopback, run in-process against the test etcd, and the
broadcast DHCP requests a test sends it (client `n` has a MAC ending in `n` and xid `n`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

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
from spoke.dhcp.codec import encode
from spoke.dhcp.message import BROADCAST_FLAG, Message, MessageType, Op, Opt
from spoke.runtime import Spoke
from tests.lab.etcd import EtcdServer, free_udp_port, wait_until

NODE = "spoke-a"


def from_client(n: int, options: dict[int, bytes]) -> bytes:
    """A broadcast BOOTREQUEST from client `n` (its MAC ends in `n`, `n` is also its xid)."""
    return encode(
        Message(
            op=Op.BOOTREQUEST,
            xid=n,
            chaddr=bytes([2, 0, 0, 0, 0, n]).ljust(16, b"\0"),
            flags=BROADCAST_FLAG,
            options=options,
        )
    )


def discover(n: int) -> bytes:
    return from_client(n, {Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER])})


def request(n: int, ip: IPv4Address, server_id: str = "127.0.0.1") -> bytes:
    """A REQUEST in SELECTING for the address offered to client `n` (as `discover(n)`)."""
    return from_client(
        n,
        {
            Opt.MESSAGE_TYPE: bytes([MessageType.REQUEST]),
            Opt.SERVER_ID: IPv4Address(server_id).packed,
            Opt.REQUESTED_ADDRESS: ip.packed,
        },
    )


@contextlib.asynccontextmanager
async def running_spoke(
    etcd_server: EtcdServer,
    root: str,
    port: int,
    tmp_path: Path,
    *,
    failover: FailoverConfig | None = None,
    **dhcp: Any,
) -> AsyncIterator[Spoke]:
    """A cluster-mode spoke on loopback (`port`), started and ready; stopped on the way out."""
    cfg = SpokeConfig(
        node=NODE,
        etcd=EtcdConfig(etcd_server.client_config(), root),
        dhcp=DhcpConfig(interfaces=("lo",), port=port, client_port=free_udp_port(), **dhcp),
        metrics=None,
        tracing=TracingConfig(),
        log=LogConfig(),
        mode=Mode.CLUSTER,
        cluster=ClusterConfig(report_interval=0.2, session_ttl=3, grpc_listen="127.0.0.1:0"),
        failover=failover or FailoverConfig(journal=tmp_path / f"{NODE}.journal"),
    )
    spoke = Spoke(cfg, ready_file=tmp_path / "ready")
    stop = asyncio.Event()
    task = asyncio.create_task(spoke.run(stop))
    try:

        async def ready() -> bool:
            assert not task.done(), task
            return (tmp_path / "ready").exists()

        await wait_until(ready, within=15.0)
        yield spoke
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10.0)
