"""The planner's actions as etcd writes: for each action, the compare on the record it read and
the put or delete that carries it out. Pure; no I/O.

The hub role adds its epoch fence to the compares and sends the whole as one transaction
(`hub.role.HubRole.execute`); a failed compare means someone wrote the record since the
snapshot, and the action is dropped (the next cycle plans again from what is there).
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.plan.model import (
    Action,
    CreateBlock,
    GrantBlock,
    ReclaimBlock,
    RemoveBlock,
    RequestHandover,
    SetBuckets,
)
from hubspoke.assign import BlockRecord
from hubspoke.etcd.records import Compare, Op
from hubspoke.keys import Keys


@dataclass(frozen=True, slots=True)
class Write:
    """One action's transaction (without the epoch fence) and what to log about it."""

    compares: list[Compare]
    ops: list[Op]
    what: dict[str, object]


def write_for(action: Action, keys: Keys, buckets_revision: int) -> Write:
    """`buckets_revision`: the bucket map's revision in the snapshot the action was planned on."""
    if isinstance(action, SetBuckets):
        key = keys.buckets()
        return Write(
            [Compare.mod_revision(key, "=", buckets_revision)],
            [Op.put(key, action.new.encode())],
            {"buckets": action.new.counts()},
        )
    if isinstance(action, CreateBlock):
        key = keys.block(action.scope, action.block_id)
        return Write(
            [Compare.create_revision(key, "=", 0)],
            [Op.put(key, BlockRecord(None, why=action.why).encode())],
            {"scope": action.scope, "block": action.block_id},
        )
    if isinstance(action, GrantBlock):
        key = keys.block(action.scope, action.block_id)
        return Write(
            [Compare.mod_revision(key, "=", action.expected_revision)],
            [Op.put(key, BlockRecord(action.to, why=action.why).encode())],
            {"scope": action.scope, "block": action.block_id, "to": action.to},
        )
    if isinstance(action, RequestHandover):
        key = keys.block(action.scope, action.block_id)
        record = BlockRecord(action.owner, handover_to=action.to or "", why=action.why)
        return Write(
            [Compare.mod_revision(key, "=", action.expected_revision)],
            [Op.put(key, record.encode())],
            {"scope": action.scope, "block": action.block_id, "from": action.owner},
        )
    if isinstance(action, ReclaimBlock):
        key = keys.block(action.scope, action.block_id)
        return Write(
            [Compare.mod_revision(key, "=", action.expected_revision)],
            [Op.put(key, BlockRecord(action.to, why=action.why).encode())],
            {"scope": action.scope, "block": action.block_id, "from": action.from_node},
        )
    if isinstance(action, RemoveBlock):
        key = keys.block(action.scope, action.block_id)
        return Write(
            [Compare.mod_revision(key, "=", action.expected_revision)],
            [Op.delete(key)],
            {"scope": action.scope, "block": action.block_id},
        )
    raise TypeError(f"unknown action {action!r}")
