"""Prefix watches of hubspoke.etcd against a real etcd: order, resume after restart, compaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from hubspoke.etcd import (
    EtcdClient,
    EventType,
    WatchBatch,
    WatchCompacted,
    WatchEvent,
    watch_prefix,
)
from tests.lab.etcd import EtcdServer, wait_for_etcd, wait_until

Seen = tuple[EventType, bytes, bytes]


async def _collect(
    client: EtcdClient, prefix: bytes, start: int, sink: list[WatchEvent], **kwargs: bool
) -> None:
    async for batch in watch_prefix(client, prefix, start, **kwargs):
        sink.extend(batch.events)


@contextlib.asynccontextmanager
async def collecting(
    client: EtcdClient, prefix: bytes, start: int, **kwargs: bool
) -> AsyncIterator[list[WatchEvent]]:
    events: list[WatchEvent] = []
    task = asyncio.create_task(_collect(client, prefix, start, events, **kwargs))
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _count_reaches(events: list[WatchEvent], n: int) -> None:
    async def reached() -> bool:
        return len(events) >= n

    await wait_until(reached, within=15.0)


def _seen(events: list[WatchEvent]) -> list[Seen]:
    return [(ev.type, ev.kv.key, ev.kv.value) for ev in events]


async def test_watch_from_revision_sees_history_then_live(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    first = await etcd.put(key_prefix + b"a", b"1")
    await etcd.put(key_prefix + b"b", b"2")
    await etcd.put(b"/elsewhere/" + key_prefix, b"ignored")
    async with collecting(etcd, key_prefix, first.revision, prev_kv=True) as events:
        await _count_reaches(events, 2)
        await etcd.put(key_prefix + b"a", b"3")
        await etcd.delete(key_prefix + b"b")
        await _count_reaches(events, 4)
    assert _seen(events) == [
        (EventType.PUT, key_prefix + b"a", b"1"),
        (EventType.PUT, key_prefix + b"b", b"2"),
        (EventType.PUT, key_prefix + b"a", b"3"),
        (EventType.DELETE, key_prefix + b"b", b""),
    ]
    assert events[2].prev_kv is not None
    assert events[2].prev_kv.value == b"1"
    assert events[3].prev_kv is not None
    assert events[3].prev_kv.value == b"2"


async def test_txn_events_arrive_together(etcd: EtcdClient, key_prefix: bytes) -> None:
    from hubspoke.etcd import Op

    start = (await etcd.status()).revision + 1
    batches: list[WatchBatch] = []

    async def run() -> None:
        async for batch in watch_prefix(etcd, key_prefix, start):
            if batch.events:
                batches.append(batch)

    task = asyncio.create_task(run())
    try:
        result = await etcd.txn([], [Op.put(key_prefix + b"%d" % i, b"x") for i in range(10)])

        async def arrived() -> bool:
            return bool(batches)

        await wait_until(arrived)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(batches[0].events) == 10
    assert {ev.kv.mod_revision for ev in batches[0].events} == {result.revision}
    assert batches[0].resume_revision == result.revision + 1


@pytest.fixture
async def own_etcd() -> AsyncIterator[EtcdServer]:
    server = EtcdServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_watch_survives_restart_without_gap_or_repeat(own_etcd: EtcdServer) -> None:
    prefix = b"/restart/"
    async with await EtcdClient.connect(own_etcd.client_config()) as client:
        start = (await client.status()).revision + 1
        expected: list[Seen] = []
        async with collecting(client, prefix, start) as events:
            for i in range(5):
                await client.put(prefix + b"k%d" % i, b"before-%d" % i)
                expected.append((EventType.PUT, prefix + b"k%d" % i, b"before-%d" % i))
            await client.delete(prefix + b"k0")
            expected.append((EventType.DELETE, prefix + b"k0", b""))
            await _count_reaches(events, 6)

            own_etcd.restart()
            await wait_for_etcd(client)
            for i in range(5):
                await client.put(prefix + b"k%d" % i, b"after-%d" % i)
                expected.append((EventType.PUT, prefix + b"k%d" % i, b"after-%d" % i))
            await _count_reaches(events, 11)

            own_etcd.kill()  # a crash this time, with writes while the watch is away
            own_etcd.start()
            await wait_for_etcd(client)
            await client.put(prefix + b"z", b"after-crash")
            expected.append((EventType.PUT, prefix + b"z", b"after-crash"))
            await _count_reaches(events, 12)
            await asyncio.sleep(0.3)  # a repeated event would show up here
        assert _seen(events) == expected
        revisions = [ev.kv.mod_revision for ev in events]
        assert revisions == sorted(set(revisions))


async def test_watch_from_compacted_revision_raises(etcd: EtcdClient, key_prefix: bytes) -> None:
    old = await etcd.put(key_prefix + b"a", b"1")
    await etcd.put(key_prefix + b"a", b"2")
    latest = await etcd.put(key_prefix + b"a", b"3")
    await etcd.compact(latest.revision)
    with pytest.raises(WatchCompacted) as caught:
        async with asyncio.timeout(10):
            async for _batch in watch_prefix(etcd, key_prefix, old.revision):
                pass
    assert caught.value.compact_revision == latest.revision


async def test_watch_compacted_by_etcdctl(
    etcd: EtcdClient, etcd_server: EtcdServer, key_prefix: bytes
) -> None:
    old = await etcd.put(key_prefix + b"a", b"1")
    latest = await etcd.put(key_prefix + b"a", b"2")
    etcd_server.etcdctl("compaction", str(latest.revision))
    with pytest.raises(WatchCompacted):
        async with asyncio.timeout(10):
            async for _batch in watch_prefix(etcd, key_prefix, old.revision):
                pass


async def test_watch_rejects_start_revision_zero(etcd: EtcdClient, key_prefix: bytes) -> None:
    with pytest.raises(ValueError):
        async for _batch in watch_prefix(etcd, key_prefix, 0):
            pass
