"""Many stored bindings written fast, in the project's own format: what a big network leaves in
etcd. Used by the scale benchmark (`bench/scale.py`) and the large-table start test.

Each binding is `encode_binding` of a BOUND lease (client `n` has MAC `02:xx:xx:xx:xx:xx` with
`n` in the last four bytes) at `keys.lease(scope, ip)`, written by transactions of up to 128
puts (etcd 3.4's limit), several in flight.
"""

from __future__ import annotations

import asyncio
import time
from ipaddress import IPv4Address

from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.records import Op
from hubspoke.keys import Keys
from hubspoke.model import Binding, BindingState
from hubspoke.values import encode_binding

TXN_PUTS = 128


def stored_binding(scope: str, ip: IPv4Address, n: int, node: str, now: float) -> Binding:
    """Client `n`'s BOUND binding at `ip`, valid for a day from `now`."""
    mac = b"\x02\x00" + n.to_bytes(4, "big")
    return Binding(
        scope=scope,
        ip=ip,
        state=BindingState.BOUND,
        client_key=b"\x01" + mac,
        hw_address=mac,
        start=now,
        expires=now + 86400.0,
        node=node,
        hostname=f"host-{n}",
    )


async def store_bindings(
    client: EtcdClient,
    keys: Keys,
    scope: str,
    first: IPv4Address,
    count: int,
    *,
    node: str = "spoke-1",
    inflight: int = 8,
) -> float:
    """Write `count` bindings at `first`, `first + 1`, ...; returns the seconds it took."""
    started = time.monotonic()
    now = time.time()
    slots = asyncio.Semaphore(inflight)
    base = int(first)

    async def write(lo: int, hi: int) -> None:
        try:
            puts = []
            for n in range(lo, hi):
                ip = IPv4Address(base + n)
                value = encode_binding(stored_binding(scope, ip, n, node, now))
                puts.append(Op.put(keys.lease(scope, ip), value))
            result = await client.txn([], puts)
            if not result.succeeded:
                raise RuntimeError("an unconditional transaction failed")
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tg:
        for lo in range(0, count, TXN_PUTS):
            await slots.acquire()
            tg.create_task(write(lo, min(lo + TXN_PUTS, count)))
    return time.monotonic() - started
