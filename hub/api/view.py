"""The management API's view of the cluster (`hub.api.model.ClusterView`), served by the hub role.

Reads come from the role's mirrors and a lease index over a mirror of `leases/` (lookups by
MAC or client identifier need no scan of etcd; the index decodes what changed when a lookup
comes, not as each binding commits); writes (scopes, drains) are transactions that
compare the hub's epoch. Errors are the API's own types, translated by the servicers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from ipaddress import IPv4Address
from typing import Any

from hub.api.model import (
    AlreadyExists,
    BlockOwnership,
    ClusterState,
    FailedPrecondition,
    InvalidArgument,
    LeaseInfo,
    NotFound,
    ReportAck,
    ScopeUtilization,
    SpokeState,
    UtilizationReport,
)
from hub.plan.inputs import block_owners
from hub.role import HubRole
from hubspoke.config import ConfigError
from hubspoke.etcd.mirror import PrefixMirror
from hubspoke.etcd.records import Compare, KeyValue, Op
from hubspoke.keys import KeyError_, prefix_end
from hubspoke.model import Binding
from hubspoke.scopes import store as scopestore
from hubspoke.states import State
from hubspoke.values import ValueFormatError, decode_binding

log = logging.getLogger("hubspoke.hub.view")

CATCH_UP_SLICE = 2000  # bindings decoded per turn of the event loop when a lookup catches up


class LeaseIndex:
    """Every binding by (scope, ip), with indexes by hardware address and client key."""

    def __init__(self) -> None:
        self.by_ip: dict[tuple[str, IPv4Address], Binding] = {}
        self.by_hw: dict[bytes, set[tuple[str, IPv4Address]]] = {}
        self.by_client: dict[bytes, set[tuple[str, IPv4Address]]] = {}

    def _drop(self, ident: tuple[str, IPv4Address]) -> None:
        old = self.by_ip.pop(ident, None)
        if old is not None:
            self.by_hw.get(old.hw_address, set()).discard(ident)
            self.by_client.get(old.client_key, set()).discard(ident)

    def apply(self, ident: tuple[str, IPv4Address], binding: Binding | None) -> None:
        self._drop(ident)
        if binding is not None:
            self.by_ip[ident] = binding
            self.by_hw.setdefault(binding.hw_address, set()).add(ident)
            self.by_client.setdefault(binding.client_key, set()).add(ident)


class HubView:
    """`ClusterView` over a running `HubRole`."""

    def __init__(self, role: HubRole) -> None:
        self.role = role
        self.leases = LeaseIndex()
        self.lease_mirror = PrefixMirror(role.client, role.keys.leases_prefix(), self._lease)
        self._dirty: set[bytes] = set()  # lease keys changed since the index last caught up
        # One scope write at a time: validation of the whole set cannot see a concurrent create.
        self._scope_lock = asyncio.Lock()

    def _lease(self, key: bytes, old: KeyValue | None, new: KeyValue | None) -> None:
        """A binding changed: noted only. Decoding every binding as it commits cost the hub a
        share of a core (bench/README.md, third session); lookups are rare, so the index catches
        up when one comes (`_catch_up`)."""
        self._dirty.add(key)

    async def _catch_up(self) -> None:
        """Decode the bindings changed since the last lookup into the index, in slices that
        let the hub's other work run between them."""
        keys, items = self.role.keys, self.lease_mirror.items
        while self._dirty:
            for _ in range(min(len(self._dirty), CATCH_UP_SLICE)):
                key = self._dirty.pop()
                try:
                    ident = keys.parse_lease(key)
                except KeyError_:
                    continue
                kv = items.get(key)
                binding = None
                if kv is not None:
                    try:
                        binding = decode_binding(kv.value)
                    except ValueFormatError:
                        binding = None
                self.leases.apply(ident, binding)
            if self._dirty:
                await asyncio.sleep(0)

    # -- cluster state -------------------------------------------------------------------------
    def cluster_state(self) -> ClusterState:
        role = self.role
        snap = role.snapshot()
        counts = snap.buckets.counts()
        owned = block_owners(snap)
        spokes = []
        for node, rec in sorted(role.spokes.items()):
            member = rec.member
            if member is not None and member.role != "spoke":
                continue
            if member is None and node not in counts and node not in owned and rec.report is None:
                continue
            live = member is not None
            draining = node in snap.drains or bool(member and member.draining)
            if not live:
                state, reason = State.PARTNER_DOWN.value, rec.state_reason or "session ended"
            elif draining:
                state, reason = State.MAINTENANCE.value, "drained by an operator"
            elif rec.report is not None:
                state, reason = rec.report.state, rec.report.state_reason
            else:
                state, reason = "STARTUP", "no report yet"
            util: tuple[ScopeUtilization, ...] = rec.report.scopes if rec.report else ()
            spokes.append(
                SpokeState(
                    node=node,
                    state=state,
                    state_reason=reason,
                    live=live,
                    draining=draining,
                    bucket_count=counts.get(node, 0),
                    blocks=tuple(owned.get(node, ())),
                    utilization=util,
                    report_age_s=role.report_age(node),
                    cpu=rec.report.cpu if rec.report is not None else None,
                    grpc_address=(member.grpc_address or "") if member else "",
                )
            )
        blocks = tuple(
            BlockOwnership(scope, block_id, rec.owner, rec.handover_to)
            for (scope, block_id), (rec, _) in sorted(snap.blocks.items())
        )
        return ClusterState(
            hub_node=role.cfg.node,
            epoch=role.epoch,
            hub_address=role.address,
            spokes=tuple(spokes),
            blocks=blocks,
            buckets_total=len(snap.buckets.owners),
            buckets_unassigned=sum(1 for o in snap.buckets.owners if o is None),
        )

    # -- leases --------------------------------------------------------------------------------
    async def get_leases(
        self,
        *,
        ip: IPv4Address | None = None,
        mac: bytes | None = None,
        client_id: bytes | None = None,
    ) -> list[LeaseInfo]:
        await self._catch_up()
        idx = self.leases
        if ip is not None:
            idents = {i for i in idx.by_ip if i[1] == ip}
        elif mac is not None:
            idents = set(idx.by_hw.get(mac, ()))
        elif client_id is not None:
            idents = set(idx.by_client.get(b"\x00" + client_id, ()))
            idents |= idx.by_client.get(client_id, set())
        else:
            raise InvalidArgument("give one of ip, mac or client_id")
        now = self.role.clock()
        return [LeaseInfo.from_binding(idx.by_ip[i], now) for i in sorted(idents)]

    async def list_leases(
        self, scope: str | None, page_size: int, page_token: str
    ) -> tuple[list[LeaseInfo], str]:
        keys = self.role.keys
        prefix = keys.leases_prefix(scope)
        start = prefix
        if page_token:
            try:
                start = bytes.fromhex(page_token)
            except ValueError:
                raise InvalidArgument(f"page_token: {page_token!r} is not a token") from None
            if not start.startswith(prefix):
                raise InvalidArgument("page_token: not a token of this listing")
        page = await self.role.client.range(start, prefix_end(prefix), limit=page_size)
        now = self.role.clock()
        out = []
        for kv in page.kvs:
            try:
                out.append(LeaseInfo.from_binding(decode_binding(kv.value), now))
            except ValueFormatError:
                continue
        token = (page.kvs[-1].key + b"\0").hex() if page.more and page.kvs else ""
        return out, token

    # -- scopes --------------------------------------------------------------------------------
    def _docs(self) -> dict[str, dict[str, Any]]:
        docs = {}
        for kv in self.role.scope_docs.items.values():
            try:
                name = self.role.keys.parse_scope(kv.key)
                docs[name] = dict(json.loads(kv.value)["scope"])
            except (KeyError_, ValueError, KeyError, TypeError):
                continue
        return docs

    async def list_scopes(self) -> list[dict[str, Any]]:
        return [d for _, d in sorted(self._docs().items())]

    async def get_scope(self, name: str) -> dict[str, Any]:
        doc = self._docs().get(name)
        if doc is None:
            raise NotFound(f"scope {name!r} does not exist")
        return doc

    async def _scope_write(self, op: str, *args: Any) -> None:
        role = self.role
        try:
            async with self._scope_lock:
                await getattr(scopestore, op)(role.client, role.keys, *args, role.fence())
        except ConfigError as e:
            raise InvalidArgument(str(e)) from None
        except scopestore.NotFound as e:
            raise NotFound(str(e)) from None
        except scopestore.AlreadyExists as e:
            raise AlreadyExists(str(e)) from None
        except scopestore.FenceLost as e:
            await role.check_epoch()
            raise FailedPrecondition(str(e)) from None
        except scopestore.Conflict as e:
            raise FailedPrecondition(f"{e}; read the scope again and retry") from None

    async def create_scope(self, doc: dict[str, Any]) -> dict[str, Any]:
        await self._scope_write("create_scope", doc)
        log.info("hub.scope_created", extra={"scope": doc.get("name")})
        return doc

    async def update_scope(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("name") != name:
            raise InvalidArgument(f"name: the document names {doc.get('name')!r}, not {name!r}")
        await self._scope_write("update_scope", doc)
        log.info("hub.scope_updated", extra={"scope": name})
        return doc

    async def delete_scope(self, name: str) -> None:
        await self._scope_write("delete_scope", name)
        log.info("hub.scope_deleted", extra={"scope": name})

    # -- drain ---------------------------------------------------------------------------------
    async def drain(self, node: str) -> None:
        role = self.role
        value = json.dumps({"v": 1, "since": round(role.clock(), 3)}).encode()
        result = await role.client.txn(role.fence(), [Op.put(role.keys.drain(node), value)])
        if not result.succeeded:
            await role.check_epoch()
            raise FailedPrecondition("the hub's epoch changed; try again")
        log.info("hub.drain", extra={"node": node})
        role.wake.set()

    async def undrain(self, node: str) -> None:
        role = self.role
        key = role.keys.drain(node)
        result = await role.client.txn(
            [*role.fence(), Compare.create_revision(key, ">", 0)], [Op.delete(key)]
        )
        if not result.succeeded:
            await role.check_epoch()
            raise NotFound(f"{node} is not drained")
        log.info("hub.undrain", extra={"node": node})
        role.wake.set()

    # -- reports -------------------------------------------------------------------------------
    def on_report(self, report: UtilizationReport, peer: str) -> ReportAck:
        return self.role.on_report(report, peer)

    def on_report_stream_closed(self, node: str, error: str | None) -> None:
        self.role.on_report_stream_closed(node, error)
