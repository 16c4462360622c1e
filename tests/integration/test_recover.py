"""RECOVER against a real etcd: a journal with one clean and one conflicting write replayed."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from hubspoke.model import Versioned
from hubspoke.values import decode_binding, encode_binding
from spoke.dhcp.decisions import BindingWrite
from spoke.failover.journal import Journal, decode_line, encode_line
from spoke.failover.replay import Replayer
from tests.lab.leasestore import binding, store_for

A = IPv4Address("10.9.0.30")
B = IPv4Address("10.9.0.31")


async def test_replay_one_clean_and_one_conflicting_write(
    etcd: EtcdClient, key_prefix: bytes, tmp_path: Path
) -> None:
    store = await store_for(etcd, key_prefix)
    keys = Keys(key_prefix.decode().rstrip("/"))
    fence_a = store.table.owned_block("lan", A)
    fence_b = store.table.owned_block("lan", B)
    assert fence_a is not None and fence_b is not None
    # While cut off, the spoke journaled two new allocations and a renewal of the first.
    ours_a = binding(b"\x01\x01aaaaaa", ip=A)
    ours_b = binding(b"\x01\x01bbbbbb", ip=B)
    renewed_a = replace(ours_a, start=1500.0, expires=2500.0)
    journal = Journal(tmp_path / "s1.journal")
    journal.append(
        [
            encode_line(BindingWrite("lan", A, ours_a, None, fence_a)),
            encode_line(BindingWrite("lan", B, ours_b, None, fence_b)),
            encode_line(BindingWrite("lan", A, renewed_a, Versioned(0, 0), None)),
        ]
    )
    # Meanwhile another spoke bound B for another client in etcd.
    theirs_b = binding(b"\x01\x01cccccc", node="spoke-2", ip=B)
    await etcd.put(keys.lease("lan", B), encode_binding(theirs_b))

    conflicted: set[tuple[str, IPv4Address, bytes]] = set()
    replayer = Replayer(store, store.table, conflicted)
    read = journal.read()
    assert len(read.entries) == 3
    assert await replayer.replay(read.entries) == 2

    kv_a = await etcd.get(keys.lease("lan", A))
    kv_b = await etcd.get(keys.lease("lan", B))
    assert kv_a is not None and kv_b is not None
    assert decode_binding(kv_a.value) == renewed_a  # the last journaled binding, one write
    assert kv_a.version == 1
    assert decode_binding(kv_b.value) == theirs_b  # the conflict keeps etcd's binding
    assert conflicted == {("lan", B, ours_b.client_key)}
    assert replayer.report.clean == 1 and replayer.report.conflicts == 1
    held_a, held_b = store.table.get("lan", A), store.table.get("lan", B)
    assert held_a is not None and held_a[1].mod_revision == kv_a.mod_revision
    assert held_b is not None and held_b[0].client_key == theirs_b.client_key

    # Replaying the same entries again writes nothing more.
    assert await replayer.replay(read.entries) == 0
    again = await etcd.get(keys.lease("lan", A))
    assert again is not None and again.mod_revision == kv_a.mod_revision


async def test_a_block_moved_away_meanwhile_fails_the_fence(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    store = await store_for(etcd, key_prefix)
    keys = Keys(key_prefix.decode().rstrip("/"))
    fence = store.table.owned_block("lan", A)
    assert fence is not None
    ours = binding(b"\x01\x01dddddd", ip=A)
    store.table.apply("lan", A, ours, Versioned(0, 0))  # what the journal path holds locally
    block = fence[0]
    await etcd.put(keys.block("lan", block.block_id), b'{"v":1,"owner":"spoke-2"}')
    conflicted: set[tuple[str, IPv4Address, bytes]] = set()
    replayer = Replayer(store, store.table, conflicted)
    line = encode_line(BindingWrite("lan", A, ours, None, fence))
    await replayer.replay([decode_line(line[:-1], 0)])
    assert await etcd.get(keys.lease("lan", A)) is None
    assert conflicted == {("lan", A, ours.client_key)}
    assert store.table.get("lan", A) is None
