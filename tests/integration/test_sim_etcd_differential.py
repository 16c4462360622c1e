"""The simulated etcd answers one scripted session exactly as a real etcd 3.4 does.

One script of calls (puts, transactions with holding and failing compares, deletes, ranges with
limits and sorts, leases granted, attached, detached and revoked, watches from a revision, raw
watch streams, compaction, the election service, refused requests) runs through the real
`EtcdClient` against a fresh real etcd and against `SimEtcd`. Every answer is recorded: our
records as they repr, raw protobuf responses as text with the member's identity removed (cluster
and member ids, raft term), errors as their type and message; lease ids become L0, L1, ... in
the order granted. The two recordings must be equal, revisions included.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from hubspoke.api.etcd import rpc_pb2, v3election_pb2
from hubspoke.etcd import (
    Compare,
    Election,
    EtcdClient,
    EtcdError,
    Op,
    SortOrder,
    SortTarget,
    WatchBatch,
    watch_prefix,
)
from tests.lab.etcd import EtcdServer
from tests.sim.etcd import SimEtcd
from tests.sim.harness import simulate

_IDENTITY = re.compile(r"\s*(cluster_id|member_id|raft_term): \d+")


class Recorder:
    """Runs each step and keeps what it answered, in a form both etcds can be compared in."""

    def __init__(self, etcd: EtcdClient) -> None:
        self.etcd = etcd
        self.steps: list[tuple[str, str]] = []
        self.leases: list[int] = []

    def text(self, value: object) -> str:
        if isinstance(value, Message):
            out = _IDENTITY.sub("", text_format.MessageToString(value, as_one_line=True))
        else:
            out = repr(value)
        for index, lease in enumerate(self.leases):
            out = out.replace(format(lease, "x"), f"<L{index}x>").replace(str(lease), f"<L{index}>")
        return out

    async def step(self, label: str, call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except EtcdError as err:
            self.steps.append((label, f"{type(err).__name__}: {err}"))
            return None
        self.steps.append((label, self.text(result)))
        return result

    async def raw(self, label: str, path: str, request: Message, parse: Any) -> Any:
        unary = self.etcd.transport.unary(path, request, parse, idempotent=False)
        return await self.step(label, unary)

    async def grant(self, label: str, ttl: int) -> int:
        lease = await self.etcd.lease_grant(ttl)
        self.leases.append(lease.id)
        self.steps.append((label, self.text(lease)))
        return lease.id

    async def watch_stream(self, label: str, requests: list[rpc_pb2.WatchRequest]) -> None:
        """Send each request on one raw Watch stream, 0.5 s apart; record every response."""
        call: Any = self.etcd.transport.stream_stream(
            "/etcdserverpb.Watch/Watch", rpc_pb2.WatchResponse.FromString
        )
        sent = [0]

        async def read() -> None:
            while isinstance(response := await call.read(), rpc_pb2.WatchResponse):
                self.steps.append((f"{label} #{sent[0]}", self.text(response)))

        reader = asyncio.create_task(read())
        try:
            for index, request in enumerate(requests):
                sent[0] = index
                await call.write(request)
                await asyncio.sleep(0.5)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            call.cancel()

    async def watch_from(self, label: str, prefix: bytes, start: int) -> None:
        """`watch_prefix` from `start` until it is quiet for 0.5 s; record the events."""
        seen: list[str] = []

        async def follow() -> None:
            batch: WatchBatch
            try:
                async for batch in watch_prefix(self.etcd, prefix, start, prev_kv=True):
                    seen.extend(self.text(event) for event in batch.events)
            except EtcdError as err:
                seen.append(f"{type(err).__name__}: {err}")

        task = asyncio.create_task(follow())
        count = -1
        while count != len(seen) and not task.done():
            count = len(seen)
            await asyncio.sleep(0.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.steps.append((label, "\n".join(seen)))


def _watch(start: int, *, prefix: bytes = b"/p/", prev_kv: bool = True) -> rpc_pb2.WatchRequest:
    create = rpc_pb2.WatchCreateRequest(
        key=prefix, range_end=prefix[:-1] + b"0", start_revision=start, prev_kv=prev_kv
    )
    return rpc_pb2.WatchRequest(create_request=create)


async def play(etcd: EtcdClient) -> list[tuple[str, str]]:
    rec = Recorder(etcd)
    step = rec.step

    # -- puts and ranges
    await step("put a", etcd.put(b"/p/a", b"1"))
    await step("put a again, prev_kv", etcd.put(b"/p/a", b"2", prev_kv=True))
    for key in (b"/p/d", b"/p/b", b"/p/c", b"/q/x"):
        await step(f"put {key!r}", etcd.put(key, b"v" + key))
    await step("get a", etcd.get(b"/p/a"))
    await step("get a at 2", etcd.get(b"/p/a", revision=2))
    await step("get missing", etcd.get(b"/p/zz"))
    await step("range limit 2", etcd.range_prefix(b"/p/", limit=2))
    await step("range at 4", etcd.range_prefix(b"/p/", revision=4))
    await step("range keys only", etcd.range_prefix(b"/p/", keys_only=True))
    await step("count only", etcd.range(b"/p/", b"/p0", count_only=True))
    await step("count only, limit", etcd.range(b"/p/", b"/p0", count_only=True, limit=1))
    await step("from key", etcd.range(b"/p/c", b"\0"))
    await step("everything", etcd.range(b"\0", b"\0", keys_only=True))
    await step(
        "sort mod descending, limit 2",
        etcd.range(
            b"/p/", b"/p0", sort_order=SortOrder.DESCEND, sort_target=SortTarget.MOD, limit=2
        ),
    )
    await step(
        "sort target create, order none, limit 2",  # etcd fetches 3 by key, sorts, cuts
        etcd.range(b"/p/", b"/p0", sort_target=SortTarget.CREATE, limit=2),
    )
    await step(
        "sort value ascending",
        etcd.range(b"/p/", b"/p0", sort_order=SortOrder.ASCEND, sort_target=SortTarget.VALUE),
    )
    await step("all, pages of 2", etcd.range_prefix_all(b"/p/", page_size=2))
    await rec.raw(
        "range filtered by revisions, limit 1",
        "/etcdserverpb.KV/Range",
        rpc_pb2.RangeRequest(
            key=b"/p/", range_end=b"/p0", limit=1, min_create_revision=3, max_mod_revision=5
        ),
        rpc_pb2.RangeResponse.FromString,
    )
    put = "/etcdserverpb.KV/Put"
    parse_put = rpc_pb2.PutResponse.FromString
    await rec.raw(
        "put ignore_value",
        put,
        rpc_pb2.PutRequest(key=b"/p/d", ignore_value=True, prev_kv=True),
        parse_put,
    )
    await rec.raw(
        "put ignore_lease on a missing key",
        put,
        rpc_pb2.PutRequest(key=b"/p/zz", value=b"x", ignore_lease=True),
        parse_put,
    )
    await rec.raw(
        "put ignore_value with a value",
        put,
        rpc_pb2.PutRequest(key=b"/p/d", value=b"x", ignore_value=True),
        parse_put,
    )
    await step("future revision", etcd.get(b"/p/a", revision=1000))
    await step("empty key", etcd.put(b"", b"x"))

    # -- transactions
    created = 2
    modified = 3  # of /p/a
    compares = [
        Compare.value(b"/p/a", "=", b"2"),
        Compare.value(b"/p/a", "!=", b"2"),
        Compare.value(b"/p/a", ">", b"1"),
        Compare.value(b"/p/a", "<", b"1"),
        Compare.version(b"/p/a", "=", 2),
        Compare.version(b"/p/a", ">", 2),
        Compare.create_revision(b"/p/a", "=", created),
        Compare.create_revision(b"/p/a", "=", 0),
        Compare.mod_revision(b"/p/a", "=", modified),
        Compare.mod_revision(b"/p/a", "<", modified),
        Compare.mod_revision(b"/p/a", ">", created),
        Compare.mod_revision(b"/p/a", "!=", modified),
        Compare.create_revision(b"/p/none", "=", 0),
        Compare.version(b"/p/none", "<", 1),
        Compare.value(b"/p/none", "!=", b"x"),
        Compare.value(b"/p/none", "=", b""),
    ]
    for index, cmp in enumerate(compares):
        request = rpc_pb2.TxnRequest(
            compare=[cmp.to_pb()],
            success=[Op.put(b"/t/%d" % index, b"won").to_pb(), Op.get(b"/p/a").to_pb()],
            failure=[Op.get(b"/p/b").to_pb(), Op.delete(b"/t/nothing").to_pb()],
        )
        await rec.raw(
            f"txn {cmp.target.name} {cmp.op} {cmp.operand!r}",
            "/etcdserverpb.KV/Txn",
            request,
            rpc_pb2.TxnResponse.FromString,
        )
    range_cmp = rpc_pb2.Compare(
        key=b"/t/", range_end=b"/t0", target=rpc_pb2.Compare.VALUE, value=b"won"
    )
    await rec.raw(
        "txn range compare",
        "/etcdserverpb.KV/Txn",
        rpc_pb2.TxnRequest(compare=[range_cmp], success=[Op.get(b"/t/", range_end=b"/t0").to_pb()]),
        rpc_pb2.TxnResponse.FromString,
    )
    await step(
        "txn reads its own writes",
        etcd.txn(
            [Compare.create_revision(b"/p/e", "=", 0)],
            [
                Op.get(b"/p/e"),
                Op.put(b"/p/e", b"e", prev_kv=True),
                Op.get(b"/p/e"),
                Op.delete(b"/p/zz"),
                Op.put(b"/p/b", b"b2", prev_kv=True),
                Op.get(b"/p/", range_end=b"/p0", limit=2),
            ],
        ),
    )
    await step("txn deleting nothing", etcd.txn([], [Op.delete(b"/p/zz"), Op.get(b"/p/e")]))
    await step("txn read only", etcd.txn([], [Op.get(b"/p/a")]))
    await step("txn empty", etcd.txn([], []))
    await step("txn 129 puts", etcd.txn([], [Op.put(b"/m/%d" % i, b"x") for i in range(129)]))
    await step("txn 128 puts", etcd.txn([], [Op.put(b"/m/%d" % i, b"x") for i in range(128)]))
    await step("txn same key twice", etcd.txn([], [Op.put(b"/p/a", b"1"), Op.put(b"/p/a", b"2")]))
    await step(
        "txn put inside a deleted range",
        etcd.txn([], [Op.delete(b"/p/", range_end=b"/p0"), Op.put(b"/p/a", b"2")]),
    )
    await step(
        "txn same key twice in the branch not taken",
        etcd.txn(
            [Compare.version(b"/p/a", "=", 99)], [], [Op.put(b"/x", b"1"), Op.put(b"/x", b"2")]
        ),
    )

    # -- deletes
    await step("delete b, prev_kv", etcd.delete(b"/p/b", prev_kv=True))
    await step("delete missing", etcd.delete(b"/p/b"))
    await step("delete prefix /m/", etcd.delete_prefix(b"/m/"))
    await step("recreate b", etcd.put(b"/p/b", b"again"))
    await step("get b", etcd.get(b"/p/b"))

    # -- leases
    ten = await rec.grant("grant 10", 10)
    await rec.grant("grant 0 (the minimum)", 0)
    await step("put with lease", etcd.put(b"/l/one", b"1", lease=ten))
    await step("put with lease 2", etcd.put(b"/l/two", b"2", lease=ten))
    await step("put three with lease", etcd.put(b"/l/three", b"3", lease=ten))
    await step("detach three", etcd.put(b"/l/three", b"3, no lease"))
    ttl = await etcd.lease_time_to_live(ten, keys=True)
    rec.steps.append(("ttl keys", rec.text((ttl.granted_ttl, sorted(ttl.keys), ttl.ttl > 0))))
    await step("revoke", etcd.lease_revoke(ten))
    await step("leased keys gone", etcd.range_prefix(b"/l/"))
    await step("ttl after revoke", etcd.lease_time_to_live(ten))
    await step("revoke again", etcd.lease_revoke(ten))
    await step("put with a missing lease", etcd.put(b"/l/x", b"1", lease=12345))
    await step(
        "txn with a missing lease",
        etcd.txn([], [Op.put(b"/l/y", b"1"), Op.put(b"/l/x", b"1", lease=12345)]),
    )

    # -- watches
    now = (await etcd.status()).revision
    await rec.watch_from("watch /p/ from 2", b"/p/", 2)
    await rec.watch_from("watch /l/ from 10", b"/l/", 10)
    progress = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
    cancel = rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=0))
    await rec.watch_stream("raw watch", [_watch(16), progress, _watch(now + 1), cancel])
    await rec.watch_stream(
        "raw watch, filters",
        [
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=b"/p/",
                    range_end=b"/p0",
                    start_revision=2,
                    filters=[rpc_pb2.WatchCreateRequest.NOPUT],
                )
            )
        ],
    )

    # -- compaction
    await step("compact", etcd.compact(now - 2))
    await step("compact again", etcd.compact(now - 2))
    await step("compact the future", etcd.compact(now + 5))
    await step("read below", etcd.get(b"/p/a", revision=now - 3))
    await step("read at", etcd.range_prefix(b"/p/", revision=now - 2))
    await rec.watch_stream("raw watch below", [_watch(now - 3)])
    await rec.watch_stream("raw watch at", [_watch(now - 2)])
    await rec.watch_from("watch below", b"/p/", now - 3)

    # -- election
    session = await rec.grant("grant for the election", 30)
    other = await rec.grant("grant for a second campaigner", 30)
    election = Election(etcd, b"/e")
    await step("no leader", election.leader())
    won = await step("campaign", election.campaign(session, b"first"))
    await step("leader", election.leader())
    await step("campaign again, new value", election.campaign(session, b"first, again"))
    await step("leader again", election.leader())
    queued = asyncio.create_task(election.campaign(other, b"second"))
    await asyncio.sleep(0.3)
    await step("candidates", election.candidates())
    third = await rec.grant("grant for a campaigner who gives up", 30)
    gives_up = asyncio.create_task(election.campaign(third, b"third"))
    await asyncio.sleep(0.3)
    await step("candidates, three", election.candidates())
    gives_up.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gives_up
    await asyncio.sleep(0.3)
    await step("candidates after one gave up", election.candidates())
    await step("proclaim", election.proclaim(won, b"first, proclaimed"))
    await step("resign", election.resign(won))
    await step("second wins", queued)
    await step("leader now", election.leader())
    await step("proclaim after resigning", election.proclaim(won, b"late"))
    await step("campaign with a missing lease", election.campaign(12345, b"x"))
    await step("raw leader", _leader(rec))

    status = await etcd.status()
    rec.steps.append(("status", rec.text((status.version, status.revision, status.errors))))
    return rec.steps


async def _leader(rec: Recorder) -> Message:
    return await rec.etcd.transport.unary(
        "/v3electionpb.Election/Leader",
        v3election_pb2.LeaderRequest(name=b"/e"),
        v3election_pb2.LeaderResponse.FromString,
        idempotent=True,
    )


@pytest.fixture(scope="module")
def fresh_etcd() -> Iterator[EtcdServer]:
    """An etcd of this module's own: the script's revisions start at 1."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
async def real_client(fresh_etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    client = await EtcdClient.connect(fresh_etcd.client_config())
    try:
        yield client
    finally:
        await client.close()


def _simulated() -> list[tuple[str, str]]:
    async def scenario(sim: SimEtcd) -> list[tuple[str, str]]:
        client = sim.client("differential")
        try:
            return await play(client)
        finally:
            await client.close()

    # the test etcd runs with a 50 ms heartbeat: its minimum lease TTL is 1 s
    return simulate(scenario, seed=11, min_lease_ttl=1)


async def test_the_simulated_etcd_answers_like_a_real_one(real_client: EtcdClient) -> None:
    expected = await play(real_client)
    simulated: Callable[[], list[tuple[str, str]]] = _simulated
    actual = await asyncio.to_thread(simulated)  # its own virtual loop, in a thread
    assert [label for label, _ in actual] == [label for label, _ in expected]
    for (label, want), (_, got) in zip(expected, actual, strict=True):
        assert got == want, label
