"""A spoke's replica of the stored scopes: a read of `config/scopes/`, then a watch.

`ScopeFollower` keeps the parsed stored documents (`hubspoke.scopes.store`), and after every change
that alters the served set calls `on_change` with the full, valid set (sorted by name). A stored
scope that is invalid, on its own or next to the others, is logged once per change as
`scopes.invalid` (with the scope's name and the reason) and skipped; the others keep working.
A compaction past the watch's position triggers a full resync (range, then a new watch).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import WatchCompacted
from hubspoke.etcd.watch import EventType, WatchEvent, watch_prefix
from hubspoke.keys import KeyError_, Keys
from hubspoke.model import Scope
from hubspoke.scopes.store import StoredScope, effective_scopes, read_scopes, stored_scope

log = logging.getLogger("hubspoke.scopes")

__all__ = ["ScopeFollower"]


class ScopeFollower:
    """Follows `config/scopes/`: `await load()` once, then run `follow()` in a task.

    After `load()`, `scopes` holds the served set and `revision` the revision it reflects;
    `on_change` is called from `follow()` only, each time the served set changes (also after
    a resync). An exception from `on_change` is logged and the watch goes on.
    """

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        on_change: Callable[[tuple[Scope, ...]], None],
    ) -> None:
        self._client = client
        self._keys = keys
        self._on_change = on_change
        self._stored: dict[str, StoredScope] = {}
        self._reported: dict[str, str] = {}
        self.scopes: tuple[Scope, ...] = ()
        self.revision = 0

    async def load(self) -> int:
        """Read every stored scope at one revision; returns that revision."""
        self._stored, self.revision = await read_scopes(self._client, self._keys)
        self._refresh(notify=False)
        log.info(
            "scopes.loaded",
            extra={
                "scopes": [s.name for s in self.scopes],
                "skipped": sorted(self._reported),
                "revision": self.revision,
            },
        )
        return self.revision

    async def follow(self) -> None:
        """Apply every change after `revision`, forever (loads first if `load` was not called)."""
        if self.revision == 0:
            await self.load()
        prefix = self._keys.scopes_prefix()
        while True:
            try:
                stream = watch_prefix(self._client, prefix, self.revision + 1)
                async with contextlib.aclosing(stream):
                    async for batch in stream:
                        for ev in batch.events:
                            self._apply(ev)
                        self.revision = batch.resume_revision - 1
                        if batch.events:
                            self._refresh(notify=True)
            except WatchCompacted as e:
                log.warning(
                    "scopes.watch_compacted",
                    extra={"from": self.revision + 1, "compact_revision": e.compact_revision},
                )
                before = self.scopes
                await self.load()
                if self.scopes != before:
                    self._notify()

    def _apply(self, ev: WatchEvent) -> None:
        try:
            if ev.type is EventType.PUT:
                entry = stored_scope(self._keys, ev.kv)
                self._stored[entry.name] = entry
            else:
                self._stored.pop(self._keys.parse_scope(ev.kv.key), None)
        except KeyError_:
            log.warning("scopes.bad_key", extra={"key": ev.kv.key.decode(errors="replace")})

    def _refresh(self, *, notify: bool) -> None:
        served, refused = effective_scopes(self._stored.values())
        for name, err in sorted(refused.items()):
            reason = str(err)
            if self._reported.get(name) != reason:
                entry = self._stored[name]
                log.warning(
                    "scopes.invalid",
                    extra={
                        "scope": name,
                        "path": err.path,
                        "reason": err.reason,
                        "mod_revision": entry.mod_revision,
                    },
                )
        self._reported = {name: str(err) for name, err in refused.items()}
        if served != self.scopes:
            self.scopes = served
            if notify:
                self._notify()

    def _notify(self) -> None:
        try:
            self._on_change(self.scopes)
        except Exception:
            log.exception("scopes.on_change_failed", extra={"revision": self.revision})
