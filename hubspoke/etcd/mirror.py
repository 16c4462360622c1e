"""A local mirror of one etcd prefix: a consistent load, then a watch from the next revision.

`PrefixMirror.items` is every key under the prefix as of `revision`, updated from the watch;
`changed` is set after each applied batch so a planner can wake up. Compaction past the
mirror's position causes a full reload (range, then a new watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import WatchCompacted
from hubspoke.etcd.records import KeyValue
from hubspoke.etcd.watch import EventType, watch_prefix

log = logging.getLogger("hubspoke.etcd.mirror")

Listener = Callable[[bytes, KeyValue | None, KeyValue | None], None]


class PrefixMirror:
    """Keys under `prefix` with their latest `KeyValue`; `on_change(key, old, new)` per event."""

    def __init__(
        self, client: EtcdClient, prefix: bytes, on_change: Listener | None = None
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.items: dict[bytes, KeyValue] = {}
        self.revision = 0
        self.changed = asyncio.Event()
        self._on_change = on_change

    async def load(self) -> int:
        kvs, revision = await self.client.range_prefix_all(self.prefix)
        old = self.items
        self.items = {kv.key: kv for kv in kvs}
        self.revision = revision
        if self._on_change is not None:
            for key in old.keys() - self.items.keys():
                self._on_change(key, old[key], None)
            for key, kv in self.items.items():
                if old.get(key) != kv:
                    self._on_change(key, old.get(key), kv)
        self.changed.set()
        return revision

    async def follow(self) -> None:
        """Apply every change after `revision`, forever (cancel to stop)."""
        while True:
            try:
                stream = watch_prefix(self.client, self.prefix, self.revision + 1)
                async with contextlib.aclosing(stream):
                    async for batch in stream:
                        for ev in batch.events:
                            key = ev.kv.key
                            old = self.items.get(key)
                            if ev.type is EventType.PUT:
                                self.items[key] = ev.kv
                                new: KeyValue | None = ev.kv
                            else:
                                self.items.pop(key, None)
                                new = None
                            if self._on_change is not None:
                                self._on_change(key, old, new)
                        self.revision = batch.resume_revision - 1
                        if batch.events:
                            self.changed.set()
            except WatchCompacted as e:
                prefix = self.prefix.decode(errors="replace")
                at = e.compact_revision
                log.warning("etcd.mirror_compacted", extra={"prefix": prefix, "at": at})
                await self.load()
