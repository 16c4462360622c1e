"""The real `watch_prefix` and `PrefixMirror` on the simulated etcd: history, resume, compaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from hubspoke.etcd import EtcdClient, EventType, KeyValue, WatchBatch, WatchCompacted, watch_prefix
from hubspoke.etcd.mirror import PrefixMirror
from tests.sim.etcd import SimEtcd
from tests.sim.harness import simulate


@contextlib.asynccontextmanager
async def watching(
    client: EtcdClient, prefix: bytes, start: int, **options: bool
) -> AsyncIterator[list[WatchBatch]]:
    batches: list[WatchBatch] = []

    async def follow() -> None:
        async for batch in watch_prefix(client, prefix, start, **options):
            batches.append(batch)

    task = asyncio.create_task(follow())
    try:
        yield batches
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def events(batches: list[WatchBatch]) -> list[tuple[str, bytes, int]]:
    return [(e.type.name, e.kv.key, e.kv.mod_revision) for b in batches for e in b.events]


def test_history_then_live_events_with_prev_kv() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        await etcd.put(b"/w/a", b"1")
        await etcd.put(b"/other", b"x")
        await etcd.put(b"/w/a", b"2")
        async with watching(etcd, b"/w/", 2, prev_kv=True) as batches:
            await asyncio.sleep(0.1)
            assert events(batches) == [("PUT", b"/w/a", 2), ("PUT", b"/w/a", 4)]
            assert batches[0].resume_revision == 5
            await etcd.txn([], [])
            await etcd.delete(b"/w/a")
            await asyncio.sleep(0.1)
        last = batches[-1].events[0]
        assert last.type is EventType.DELETE and last.kv.mod_revision == 5
        assert last.prev_kv is not None and last.prev_kv.value == b"2"
        await etcd.close()

    simulate(scenario)


def test_resume_after_a_broken_stream_skips_nothing() -> None:
    async def scenario(sim: SimEtcd) -> None:
        watcher, writer = sim.client("watcher"), sim.client("writer")
        async with watching(watcher, b"/w/", 1) as batches:
            for i in range(30):
                await writer.put(b"/w/%d" % (i % 4), b"%d" % i)
                if i == 10:
                    sim.partition("watcher", "refused")
                if i == 20:
                    sim.heal("watcher")
            await asyncio.sleep(3)
        assert [rev for _, _, rev in events(batches)] == list(range(2, 32))
        await watcher.close()
        await writer.close()

    simulate(scenario)


def test_resume_below_a_compaction_raises_watch_compacted() -> None:
    async def scenario(sim: SimEtcd) -> None:
        watcher, writer = sim.client("watcher"), sim.client("writer")
        seen: list[int] = []

        async def follow() -> None:
            async for batch in watch_prefix(watcher, b"/w/", 1):
                seen.extend(e.kv.mod_revision for e in batch.events)

        task = asyncio.create_task(follow())
        await writer.put(b"/w/a", b"1")
        await asyncio.sleep(0.1)
        sim.partition("watcher", "refused")
        await writer.put(b"/w/a", b"2")
        await writer.put(b"/w/a", b"3")
        sim.compact()
        sim.heal("watcher")
        with pytest.raises(WatchCompacted) as caught:
            await asyncio.wait_for(task, 5)
        assert caught.value.compact_revision == 4
        assert seen == [2]
        await watcher.close()
        await writer.close()

    simulate(scenario)


def test_a_watch_from_a_compacted_revision_is_refused_at_once() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        for i in range(3):
            await etcd.put(b"/w/a", b"%d" % i)
        await etcd.compact(3)
        with pytest.raises(WatchCompacted):
            async for _ in watch_prefix(etcd, b"/w/", 2):
                pass
        async with watching(etcd, b"/w/", 3) as batches:  # the compact revision still reads
            await asyncio.sleep(0.1)
        assert events(batches) == [("PUT", b"/w/a", 3), ("PUT", b"/w/a", 4)]
        await etcd.close()

    simulate(scenario)


def test_progress_notifications() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        await etcd.put(b"/elsewhere", b"1")
        async with watching(etcd, b"/w/", 1) as batches:
            await etcd.put(b"/elsewhere", b"2")
            await asyncio.sleep(25)
        assert batches and all(b.is_progress and not b.events for b in batches)
        assert [b.resume_revision for b in batches] == [4, 4]
        await etcd.close()

    simulate(scenario, progress_interval=10.0)


def test_a_blackholed_watch_breaks_after_the_keepalive_timeout_and_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(sim: SimEtcd) -> None:
        watcher, writer = sim.client("watcher"), sim.client("writer")
        async with watching(watcher, b"/w/", 1) as batches:
            await writer.put(b"/w/a", b"1")
            sim.partition("watcher", "blackhole")
            await writer.put(b"/w/a", b"2")
            await asyncio.sleep(20)  # the watchdog (10 s + 5 s) killed the stream meanwhile
            sim.heal("watcher")
            await writer.put(b"/w/a", b"3")
            await asyncio.sleep(3)
        assert [rev for _, _, rev in events(batches)] == [2, 3, 4]
        await watcher.close()
        await writer.close()

    caplog.set_level(logging.INFO, logger="hubspoke.etcd.watch")
    simulate(scenario)
    assert "etcd_watch_resume prefix=b'/w/' from=3 after=" in caplog.text
    assert "keepalive watchdog timeout" in caplog.text


def test_prefix_mirror_follows_and_reloads_after_compaction() -> None:
    async def scenario(sim: SimEtcd) -> None:
        reader, writer = sim.client("reader"), sim.client("writer")
        changes: list[tuple[bytes, bytes | None]] = []

        def on_change(key: bytes, old: KeyValue | None, new: KeyValue | None) -> None:
            changes.append((key, None if new is None else new.value))

        await writer.put(b"/m/a", b"1")
        await writer.put(b"/m/b", b"1")
        mirror = PrefixMirror(reader, b"/m/", on_change)
        await mirror.load()
        follower = asyncio.create_task(mirror.follow())
        await writer.put(b"/m/a", b"2")
        await writer.delete(b"/m/b")
        await asyncio.sleep(0.1)
        assert {k: kv.value for k, kv in mirror.items.items()} == {b"/m/a": b"2"}
        assert mirror.revision == sim.revision
        sim.partition("reader", "refused")
        await writer.put(b"/m/c", b"1")
        await writer.put(b"/m/c", b"2")
        sim.compact()
        sim.heal("reader")
        await asyncio.sleep(3)
        assert {k: kv.value for k, kv in mirror.items.items()} == {b"/m/a": b"2", b"/m/c": b"2"}
        assert changes[-1] == (b"/m/c", b"2")
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await reader.close()
        await writer.close()

    simulate(scenario)
