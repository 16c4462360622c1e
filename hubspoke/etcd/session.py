"""Owns a lease-backed etcd session: grant, keep alive over one stream, detect loss, revoke.

A `Session` is what makes a process "alive" in the cluster: keys attached to its lease vanish
when the lease expires. `last_keepalive` is on the monotonic clock (the event loop's `time()`,
which a simulation may run virtually) and marks when the keep-alive etcd last confirmed was
sent; `lost` is set once the lease is known gone (etcd answered TTL 0) or
keep-alives have failed for a full TTL since the last success, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any, Self

from hubspoke.api.etcd import rpc_pb2
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdError, EtcdLeaseNotFound

log = logging.getLogger(__name__)


def monotonic() -> float:
    """The event loop's clock (time.monotonic in production; virtual in the simulation)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


_KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"


class Session:
    """A granted lease kept alive by a background task. Open with `await Session.open(...)`."""

    def __init__(self, client: EtcdClient, lease_id: int, ttl: int, granted_at: float) -> None:
        self.client = client
        self.lease_id = lease_id
        self.ttl = ttl
        self.last_keepalive = granted_at
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, client: EtcdClient, ttl: int = 5) -> Session:
        """Grant a lease of `ttl` seconds and start keeping it alive (every ttl/3)."""
        before = monotonic()
        lease = await client.lease_grant(ttl)
        session = cls(client, lease.id, lease.ttl, before)
        session._task = asyncio.create_task(
            session._keepalive_loop(), name=f"etcd-session-{lease.id:x}"
        )
        return session

    @property
    def is_alive(self) -> bool:
        return not self.lost.is_set()

    @property
    def keepalive_interval(self) -> float:
        """Seconds between keep-alives: `last_keepalive` is this old even when all is well."""
        return max(self.ttl / 3.0, 0.2)

    def remaining(self, now: float | None = None) -> float:
        """Seconds, on the monotonic clock, until the lease expires if no keep-alive succeeds."""
        current = monotonic() if now is None else now
        return self.last_keepalive + self.ttl - current

    async def wait_lost(self) -> None:
        await self.lost.wait()

    def _mark_lost(self, why: str) -> None:
        if not self.lost.is_set():
            log.warning("etcd_session_lost lease=%x reason=%s", self.lease_id, why)
            self.lost.set()

    async def _keepalive_loop(self) -> None:
        interval = self.keepalive_interval
        backoff = 0.05
        while not self.lost.is_set():
            try:
                await self._run_stream(interval)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the stream broke; retry until the TTL runs out
                log.info("etcd_keepalive_failed lease=%x error=%s", self.lease_id, err)
            if self.remaining() <= 0:
                self._mark_lost("keepalive failed for a full TTL")
                return
            await asyncio.sleep(min(backoff, max(self.remaining(), 0.01)))
            backoff = min(backoff * 2, interval)

    async def _run_stream(self, interval: float) -> None:
        call: Any = self.client.transport.stream_stream(
            _KEEPALIVE, rpc_pb2.LeaseKeepAliveResponse.FromString
        )
        try:
            while True:
                sent_at = monotonic()
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id))
                async with asyncio.timeout(max(interval, 1.0)):
                    response: Any = await call.read()
                if not isinstance(response, rpc_pb2.LeaseKeepAliveResponse):
                    raise EtcdError("keepalive stream ended")
                if response.TTL <= 0:
                    self._mark_lost("lease expired")
                    return
                self.last_keepalive = sent_at
                delay = interval - (monotonic() - sent_at)
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            call.cancel()

    async def abandon(self) -> None:
        """Stop keeping the lease alive without revoking it: it expires after its TTL.

        What a frozen or cut-off process looks like to the cluster (tests, fault drills).
        """
        await self._stop_task()

    async def close(self) -> None:
        """Stop keep-alives and revoke the lease, so keys attached to it vanish at once."""
        await self._stop_task()
        if self.lost.is_set():
            return
        with contextlib.suppress(EtcdLeaseNotFound):
            await self.client.lease_revoke(self.lease_id)
        self._mark_lost("closed")

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
