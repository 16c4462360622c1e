"""Each planner action becomes one compare on the record the plan read and one write."""

from __future__ import annotations

import pytest

from hub.plan.model import (
    Action,
    CreateBlock,
    GrantBlock,
    ReclaimBlock,
    RemoveBlock,
    RequestHandover,
    SetBuckets,
)
from hub.plan.writes import write_for
from hubspoke.assign import BlockRecord, BucketMap
from hubspoke.etcd.records import Compare, Op, OpKind
from hubspoke.keys import Keys

KEYS = Keys("/t")
BLOCK = KEYS.block("lan", "10.0.0.0-10.0.0.63")


def test_set_buckets_compares_the_map_it_read() -> None:
    new = BucketMap(("s1",) * 256)
    w = write_for(SetBuckets(new, "rebalance"), KEYS, 41)
    assert w.compares == [Compare.mod_revision(KEYS.buckets(), "=", 41)]
    assert w.ops == [Op.put(KEYS.buckets(), new.encode())]


def test_create_block_requires_the_key_absent() -> None:
    w = write_for(CreateBlock("lan", "10.0.0.0-10.0.0.63", "new pool"), KEYS, 0)
    assert w.compares == [Compare.create_revision(BLOCK, "=", 0)]
    assert w.ops == [Op.put(BLOCK, BlockRecord(None, why="new pool").encode())]


@pytest.mark.parametrize(
    ("action", "record"),
    [
        (
            GrantBlock("lan", "10.0.0.0-10.0.0.63", "s2", 7, "low"),
            BlockRecord("s2", why="low"),
        ),
        (
            RequestHandover("lan", "10.0.0.0-10.0.0.63", "s1", "s2", 7, "rebalance"),
            BlockRecord("s1", handover_to="s2", why="rebalance"),
        ),
        (
            ReclaimBlock("lan", "10.0.0.0-10.0.0.63", "s1", None, 7, "down"),
            BlockRecord(None, why="down"),
        ),
    ],
)
def test_block_moves_compare_the_revision_the_plan_saw(action: Action, record: BlockRecord) -> None:
    w = write_for(action, KEYS, 0)
    assert w.compares == [Compare.mod_revision(BLOCK, "=", 7)]
    assert w.ops == [Op.put(BLOCK, record.encode())]
    assert w.what["scope"] == "lan"


def test_remove_block_deletes_under_its_revision() -> None:
    w = write_for(RemoveBlock("lan", "10.0.0.0-10.0.0.63", 9, "pool shrank"), KEYS, 0)
    assert w.compares == [Compare.mod_revision(BLOCK, "=", 9)]
    assert [op.kind for op in w.ops] == [OpKind.DELETE] and w.ops[0].key == BLOCK
