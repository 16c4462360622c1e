"""spoke.scopefollow against a real etcd: creates, option changes, deletes, bad documents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from hubspoke.model import Scope
from hubspoke.scopes.store import (
    create_scope,
    delete_scope,
    encode_scope_doc,
    seed_scopes,
    update_scope,
)
from spoke.scopefollow import ScopeFollower
from tests.lab.etcd import wait_until

WAIT = 10.0  # seconds: a bound on how long a change may take to arrive, never a speed claim


def lan(**over: object) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "lan",
        "subnet": "10.0.0.0/24",
        "pools": ["10.0.0.100-10.0.0.199"],
        "options": {"dns_servers": ["10.0.0.53"]},
    }
    doc.update(over)
    return doc


def branch(**over: object) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "branch", "subnet": "10.1.0.0/22", "pools": ["10.1.0.10"]}
    doc.update(over)
    return doc


class Changes:
    """Records every set handed to on_change, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Scope, ...]] = asyncio.Queue()

    def __call__(self, scopes: tuple[Scope, ...]) -> None:
        self.queue.put_nowait(scopes)

    async def next(self) -> tuple[Scope, ...]:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    async def until(self, predicate: Callable[[tuple[Scope, ...]], bool]) -> tuple[Scope, ...]:
        while True:
            scopes = await self.next()
            if predicate(scopes):
                return scopes


def names(scopes: tuple[Scope, ...]) -> list[str]:
    return [s.name for s in scopes]


@contextlib.asynccontextmanager
async def following(follower: ScopeFollower) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(follower.follow())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def keys_for(key_prefix: bytes) -> Keys:
    return Keys(key_prefix.decode().rstrip("/"))


async def test_follower_sees_create_option_change_and_delete(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    keys = keys_for(key_prefix)
    await seed_scopes(etcd, keys, {"lan": lan()})
    changes = Changes()
    follower = ScopeFollower(etcd, keys, changes)
    revision = await follower.load()
    assert revision == follower.revision > 0
    assert names(follower.scopes) == ["lan"]
    assert changes.queue.empty()  # load() does not call on_change
    async with following(follower):
        await create_scope(etcd, keys, branch())
        assert names(await changes.next()) == ["branch", "lan"]

        await update_scope(etcd, keys, lan(options={"dns_servers": ["10.0.0.54", "10.0.0.55"]}))
        scopes = await changes.next()
        assert scopes[1].options[6] == bytes([10, 0, 0, 54, 10, 0, 0, 55])
        assert follower.scopes == scopes

        await delete_scope(etcd, keys, "branch")
        assert names(await changes.next()) == ["lan"]
    assert changes.queue.empty()


def reported(caplog: pytest.LogCaptureFixture, scope: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.getMessage() == "scopes.invalid" and getattr(r, "scope", None) == scope
    ]


async def test_invalid_stored_documents_are_skipped_and_reported(
    etcd: EtcdClient, key_prefix: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hubspoke.scopes")
    keys = keys_for(key_prefix)
    await seed_scopes(etcd, keys, {"lan": lan()})
    changes = Changes()
    follower = ScopeFollower(etcd, keys, changes)
    await follower.load()
    async with following(follower):
        # written behind the hub's back: unreadable, invalid on its own, conflicting
        await etcd.put(keys.scope("junk"), b"{not json")
        await etcd.put(keys.scope("bad"), encode_scope_doc(branch(name="bad", pools=["9.9.9.9"])))
        wide = branch(name="wide", subnet="10.0.0.0/16", pools=["10.0.7.1"])
        await etcd.put(keys.scope("wide"), encode_scope_doc(wide))

        async def all_reported() -> bool:
            return all(reported(caplog, n) for n in ("junk", "bad", "wide"))

        await wait_until(all_reported, within=WAIT)
        assert "not JSON" in getattr(reported(caplog, "junk")[0], "reason", "")
        assert getattr(reported(caplog, "bad")[0], "path", "") == "scopes[bad].pools[0]"
        assert "overlaps scopes[lan].subnet" in getattr(reported(caplog, "wide")[0], "reason", "")
        assert names(follower.scopes) == ["lan"]
        assert changes.queue.empty()  # the served set did not change

        # the others keep working: a valid create still arrives
        await create_scope(etcd, keys, branch())
        assert names(await changes.next()) == ["branch", "lan"]
        # each problem is reported once, not again on every later change
        assert [len(reported(caplog, n)) for n in ("junk", "bad", "wide")] == [1, 1, 1]

        # the earlier-created lan wins over wide; once lan goes, wide is served
        await delete_scope(etcd, keys, "lan")
        assert names(await changes.next()) == ["branch", "wide"]


async def test_a_failing_callback_does_not_stop_the_follower(
    etcd: EtcdClient, key_prefix: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    keys = keys_for(key_prefix)
    seen: list[list[str]] = []

    def on_change(scopes: tuple[Scope, ...]) -> None:
        seen.append(names(scopes))
        if len(seen) == 1:
            raise RuntimeError("engine rebuild failed")

    follower = ScopeFollower(etcd, keys, on_change)
    await follower.load()
    async with following(follower):
        await create_scope(etcd, keys, lan())

        async def first() -> bool:
            return len(seen) == 1

        await wait_until(first, within=WAIT)
        await create_scope(etcd, keys, branch())

        async def second() -> bool:
            return len(seen) == 2

        await wait_until(second, within=WAIT)
    assert seen == [["lan"], ["branch", "lan"]]
    assert any(r.getMessage() == "scopes.on_change_failed" for r in caplog.records)


async def test_resync_after_compaction(etcd: EtcdClient, key_prefix: bytes) -> None:
    keys = keys_for(key_prefix)
    await seed_scopes(etcd, keys, {"lan": lan()})
    changes = Changes()
    follower = ScopeFollower(etcd, keys, changes)
    loaded = await follower.load()
    await create_scope(etcd, keys, branch())
    await update_scope(etcd, keys, lan(lease_time=900))
    latest = await etcd.put(key_prefix + b"other", b"x")
    await etcd.compact(latest.revision)
    async with following(follower):  # its watch starts below the compaction point
        scopes = await changes.next()
    assert names(scopes) == ["branch", "lan"]
    assert scopes[1].lease_time == 900
    assert follower.revision >= latest.revision > loaded
