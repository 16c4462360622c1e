"""Owns the simulated etcd cluster: its state, the calls it serves, and the faults it suffers.

Built inside a running virtual loop (`tests.sim.loop`); every client process gets its own
transport, so the real `EtcdClient`, `Session`, `watch_prefix`, `Election` and `PrefixMirror`
run unchanged against it:

    sim = SimEtcd(seed=7)                      # latency 0.5-3 ms per message, seeded
    client = sim.client("spoke-a")             # an EtcdClient whose transport is sim's
    sim.partition("spoke-a", "blackhole"); sim.heal("spoke-a")
    sim.freeze(); sim.thaw()                   # SIGSTOP / SIGCONT of etcd
    sim.lose_quorum(); sim.restore_quorum()
    sim.raise_nospace(); sim.disarm_nospace()
    sim.leader_change(); sim.compact()
    sim.schedule(random_schedule(rng, ["spoke-a"], horizon=60.0))   # plain data, see faults.py

What etcd does while faulted:
- frozen: nothing is answered or applied, and no lease expires; what reaches it is queued, and
  applied in order when it thaws (after the leases that ran out meanwhile are revoked), even if
  the client's deadline passed: a write of unknown outcome, as after SIGCONT.
- quorum lost: reads (linearizable), writes, lease grants, revocations and elections wait for a
  leader; keep-alives are not answered; leases do not expire; Status says leader 0; watches stay
  open. When quorum returns, a new leader renews every lease by its TTL (`renew_leases=False`
  turns that off), then runs what waited: writes whose client gave up are dropped unless
  `lose_quorum(late_writes=True)`.
- NOSPACE: puts, transactions holding a put, lease grants and campaigns fail RESOURCE_EXHAUSTED
  "etcdserver: mvcc: database space exceeded"; reads, deletes and keep-alives pass.
- leader change: every open unary call but a waiting campaign fails UNAVAILABLE "etcdserver:
  leader changed" (its request, still travelling, is applied all the same), leases are renewed
  by their TTL, and with `break_streams=True` every stream fails too.
- compaction at the current revision: a watch that starts (or resumes) below it is cancelled
  with `compact_revision`; reads below it fail "required revision has been compacted".
Faults nest: `freeze()` twice needs `thaw()` twice; a node's partitions stack.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.protobuf.message import Message

from hubspoke.api.etcd import rpc_pb2, v3election_pb2
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.records import prefix_end
from hubspoke.etcd.transport import EtcdConfig
from tests.sim.apply import Applier, Member
from tests.sim.election import Elections, ObserveStream
from tests.sim.faults import (
    Compaction,
    Fault,
    Freeze,
    LeaderChange,
    NoSpace,
    Partition,
    QuorumLoss,
    ScheduledFault,
)
from tests.sim.mvcc import LEASE_TTL_TOO_LARGE, Change, RpcFailure, Store, Version, fail
from tests.sim.net import (
    Deliver,
    LinkMode,
    Network,
    ServerStream,
    SimTransport,
    StreamCall,
    UnaryCall,
)
from tests.sim.watch import KeepAliveStream, WatchStream

VERSION = "3.4.23"
LEADER_CHANGED = "etcdserver: leader changed"
MAX_LEASE_TTL = 9_000_000_000
PROGRESS_INTERVAL = 600.0  # etcd's default progress notification interval (10 minutes)
_KV = "/etcdserverpb.KV/"
_LEASE = "/etcdserverpb.Lease/"
_ELECTION = "/v3electionpb.Election/"


@dataclass(frozen=True, slots=True)
class _Rpc:
    """How etcd serves one unary method."""

    request: type[Message]
    handler: Callable[[SimEtcd, UnaryCall, Any], Message | None]
    quorum: bool  # needs a leader (linearizable read, or a raft write)
    write: bool  # changes state: applied even when its client gave up


class _Unimplemented:
    def __init__(self, sim: SimEtcd, call: StreamCall) -> None:
        sim.net.to_client(
            call, lambda: call.end(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {call.path}")
        )

    def on_message(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class SimEtcd:
    """One etcd cluster, in memory, on the running (virtual) loop."""

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: tuple[float, float] = (0.0005, 0.003),
        min_lease_ttl: int = 2,
        renew_leases: bool = True,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(seed)
        self.store = Store()
        self.member = Member(
            cluster_id=self.rng.getrandbits(64), member_id=self.rng.getrandbits(63) | 1
        )
        self.applier = Applier(self.store, self.member)
        self.net = Network(self, self.loop, self.rng, latency)
        self.min_lease_ttl = min_lease_ttl
        self.renew_leases = renew_leases
        self.progress_interval = progress_interval
        self.raft_index = 1
        self.trace: list[str] = []  # one line per applied write, expiry and fault
        self.watch_streams: dict[int, WatchStream] = {}
        self.keepalive_streams: dict[int, KeepAliveStream] = {}
        self.elections = Elections(self)
        self._freezes = 0
        self._quorum_losses = 0
        self._late_writes = False
        self._nospace = 0
        self._partitions: dict[str, list[LinkMode]] = {}
        self._backlog: list[Deliver] = []  # reached etcd while frozen
        self._parked: list[Deliver] = []  # waits for a leader
        self._lease_timers: dict[int, asyncio.TimerHandle] = {}
        self._lease_counter = ((self.member.member_id & 0xFFFF) << 48) | (
            self.rng.getrandbits(40) << 8
        )
        self._progress: asyncio.TimerHandle | None = None

    # -- clients ---------------------------------------------------------------------------

    def transport(self, node: str, config: EtcdConfig | None = None) -> SimTransport:
        """A transport for client process `node` (its link is shared by all its transports)."""
        return SimTransport(self.net, node, config or EtcdConfig(endpoints=("sim-etcd:2379",)))

    def client(self, node: str, config: EtcdConfig | None = None) -> EtcdClient:
        """The real `EtcdClient` of process `node`, talking to this etcd."""
        transport = self.transport(node, config)
        return EtcdClient(transport.config, transport=transport)

    # -- looking at the state (no latency, no faults) --------------------------------------

    @property
    def revision(self) -> int:
        return self.store.revision

    def get(self, key: bytes) -> Version | None:
        return self.store.live.get(key)

    def under(self, prefix: bytes) -> list[Version]:
        return self.store.versions(prefix, prefix_end(prefix))

    @property
    def frozen(self) -> bool:
        return self._freezes > 0

    @property
    def quorum(self) -> bool:
        return self._quorum_losses == 0

    @property
    def nospace(self) -> bool:
        return self._nospace > 0

    def _log(self, event: str) -> None:
        self.trace.append(f"{self.loop.time():.6f} {event}")

    # -- serving (the wire's Server protocol) ----------------------------------------------

    def arrive(self, fn: Deliver) -> None:
        if self.frozen:
            self._backlog.append(fn)
        else:
            fn()

    def when_quorate(self, fn: Deliver) -> None:
        if self.quorum:
            fn()
        else:
            self._parked.append(fn)

    def serve_unary(self, call: UnaryCall, data: bytes) -> None:
        rpc = _UNARY.get(call.path)
        if rpc is None:
            self.reply_error(call, grpc.StatusCode.UNIMPLEMENTED, f"unknown method {call.path}")
            return
        self._process(call, rpc, rpc.request.FromString(data))

    def _process(self, call: UnaryCall, rpc: _Rpc, request: Any) -> None:
        if call.abandoned and not rpc.write:
            return  # nobody waits for it and it changes nothing
        serializable = isinstance(request, rpc_pb2.RangeRequest) and request.serializable
        if rpc.quorum and not self.quorum and not serializable:
            self._parked.append(lambda: self._unpark(call, rpc, request))
            return
        try:
            response = rpc.handler(self, call, request)
        except RpcFailure as err:
            self.reply_error(call, err.code, err.details)
            return
        if rpc.write:
            self.raft_index += 1
        if response is not None:
            self.reply(call, response)

    def _unpark(self, call: UnaryCall, rpc: _Rpc, request: Any) -> None:
        if call.abandoned and not self._late_writes:
            return
        self._process(call, rpc, request)

    def cancel_unary(self, call: UnaryCall) -> None:
        self.elections.cancel(call)

    def open_stream(self, call: StreamCall, first: bytes | None) -> ServerStream:
        if call.path == "/etcdserverpb.Watch/Watch":
            return WatchStream(self, call)
        if call.path == _LEASE + "LeaseKeepAlive":
            return KeepAliveStream(self, call)
        if call.path == _ELECTION + "Observe":
            return ObserveStream(self, call, first)
        return _Unimplemented(self, call)

    def reply(self, call: UnaryCall, response: Message) -> None:
        data = response.SerializeToString()
        self.net.to_client(call, lambda: call.resolve(data))

    def reply_error(self, call: UnaryCall, code: grpc.StatusCode, details: str) -> None:
        self.net.to_client(call, lambda: call.fail(code, details))

    def send(self, call: StreamCall, response: Message) -> None:
        data = response.SerializeToString()
        self.net.to_client(call, lambda: call.push(data))

    # -- applying --------------------------------------------------------------------------

    def apply_txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        applied = self.applier.txn(req)
        self.committed(applied.changes, "txn")
        assert isinstance(applied.response, rpc_pb2.TxnResponse)
        return applied.response

    def committed(self, changes: list[Change], what: str) -> None:
        """Feed what one request changed to watches, campaigns and observers."""
        if not changes:
            return
        revision = changes[-1].revision
        self._log(f"{what} @{revision} " + " ".join(_describe(c) for c in changes))
        for stream in list(self.watch_streams.values()):
            stream.notify(changes, revision)
        self.elections.notify(changes, revision)

    def want_progress(self) -> None:
        if self._progress is None:
            self._progress = self.loop.call_later(self.progress_interval, self._progress_tick)

    def _progress_tick(self) -> None:
        self._progress = None
        if not self.watch_streams:
            return
        if not self.frozen:
            for stream in list(self.watch_streams.values()):
                stream.progress()
        self.want_progress()

    # -- leases ----------------------------------------------------------------------------

    def _next_lease_id(self) -> int:
        while True:
            self._lease_counter += self.rng.randint(1, 16)
            lease_id = self._lease_counter & (2**63 - 1)
            if lease_id and lease_id not in self.store.leases:
                return lease_id

    def renew(self, lease_id: int) -> int:
        """A keep-alive: the lease's TTL, or 0 if it is gone (an overdue lease is revoked)."""
        record = self.store.leases.get(lease_id)
        if record is None:
            return 0
        now = self.loop.time()
        if record.expiry <= now:
            self._expire(lease_id)
            return 0
        record.expiry = now + record.ttl
        return record.ttl

    def _arm(self, lease_id: int) -> None:
        old = self._lease_timers.pop(lease_id, None)
        if old is not None:
            old.cancel()
        record = self.store.leases[lease_id]
        self._lease_timers[lease_id] = self.loop.call_at(record.expiry, self._due, lease_id)

    def _due(self, lease_id: int) -> None:
        self._lease_timers.pop(lease_id, None)
        record = self.store.leases.get(lease_id)
        if record is None or self.frozen or not self.quorum:
            return  # gone, or checked again at thaw / when quorum returns
        if record.expiry > self.loop.time():
            self._arm(lease_id)
        else:
            self._expire(lease_id)

    def _expire(self, lease_id: int) -> None:
        timer = self._lease_timers.pop(lease_id, None)
        if timer is not None:
            timer.cancel()
        changes = self.store.revoke(lease_id)
        self.raft_index += 1
        self._log(f"lease {lease_id:x} expired")
        self.committed(changes, f"expire {lease_id:x}")

    def _check_leases(self) -> None:
        now = self.loop.time()
        for lease_id, record in list(self.store.leases.items()):
            if lease_id not in self.store.leases:
                continue
            if record.expiry <= now:
                self._expire(lease_id)
            else:
                self._arm(lease_id)

    def _renew_all(self) -> None:
        now = self.loop.time()
        for record in self.store.leases.values():
            record.expiry = max(record.expiry, now + record.ttl)

    # -- faults ----------------------------------------------------------------------------

    def freeze(self) -> None:
        """SIGSTOP: nothing is answered, applied or expired until `thaw`."""
        self._freezes += 1
        self._log("freeze")
        self.net.refresh_all()

    def thaw(self) -> None:
        """SIGCONT: overdue leases are revoked, then what arrived meanwhile runs, in order."""
        if self._freezes == 0:
            return
        self._freezes -= 1
        if self.frozen:
            return
        self._log("thaw")
        self.net.refresh_all()
        if self.quorum:
            self._check_leases()
        backlog, self._backlog = self._backlog, []
        for fn in backlog:
            self.arrive(fn)

    def partition(self, node: str, mode: LinkMode | str) -> None:
        """Cut process `node` off etcd: "refused" (reset, refused) or "blackhole" (silence)."""
        link_mode = LinkMode(mode)
        stack = self._partitions.setdefault(node, [])
        stack.append(link_mode)
        self._log(f"partition {node} {link_mode.value}")
        self.net.set_mode(node, link_mode)

    def heal(self, node: str) -> None:
        """End the latest partition of `node`."""
        stack = self._partitions.get(node)
        if not stack:
            return
        stack.pop()
        self._log(f"heal {node}")
        self.net.set_mode(node, stack[-1] if stack else LinkMode.OK)

    def lose_quorum(self, *, late_writes: bool = False) -> None:
        self._quorum_losses += 1
        self._late_writes = late_writes
        self._log("quorum lost")

    def restore_quorum(self) -> None:
        if self._quorum_losses == 0:
            return
        self._quorum_losses -= 1
        if not self.quorum:
            return
        self._log("quorum restored")
        self.member.raft_term += 1
        if self.renew_leases:
            self._renew_all()
        if not self.frozen:
            self._check_leases()
        parked, self._parked = self._parked, []
        for fn in parked:
            self.arrive(fn)

    def raise_nospace(self) -> None:
        self._nospace += 1
        self.applier.nospace = True
        self._log("alarm NOSPACE")

    def disarm_nospace(self) -> None:
        if self._nospace:
            self._nospace -= 1
        self.applier.nospace = self.nospace
        self._log("alarm disarmed")

    def leader_change(self, *, break_streams: bool = False) -> None:
        """A new raft leader: open unary calls fail UNAVAILABLE, leases renewed by their TTL."""
        self._log("leader change")
        self.member.raft_term += 1
        if self.renew_leases:
            self._renew_all()
            if self.quorum and not self.frozen:
                self._check_leases()
        for link in list(self.net.links.values()):
            for call in list(link.calls.values()):
                if isinstance(call, UnaryCall):
                    if call.id not in self.elections.waiting:
                        self.arrive(_failer(self, call))
                elif break_streams and isinstance(call, StreamCall):
                    self.arrive(_ender(self, call))

    def compact(self, revision: int | None = None) -> None:
        """Compact at `revision` (default: the current one)."""
        target = self.store.revision if revision is None else revision
        if target <= self.store.compact_revision:
            return
        self.store.compact(target)
        self._log(f"compact @{target}")

    def schedule(self, faults: Iterable[ScheduledFault]) -> None:
        """Inject each fault at its time (seconds from now) for its duration."""
        now = self.loop.time()
        for item in faults:
            begin, end = self._fault_actions(item.fault)
            self.loop.call_at(now + item.at, begin)
            if end is not None:
                self.loop.call_at(now + item.at + item.fault.duration, end)

    def _fault_actions(self, fault: Fault) -> tuple[Deliver, Deliver | None]:
        if isinstance(fault, Freeze):
            return self.freeze, self.thaw
        if isinstance(fault, Partition):
            node, mode = fault.node, fault.mode
            return (lambda: self.partition(node, mode)), (lambda: self.heal(node))
        if isinstance(fault, QuorumLoss):
            late = fault.late_writes
            return (lambda: self.lose_quorum(late_writes=late)), self.restore_quorum
        if isinstance(fault, NoSpace):
            return self.raise_nospace, self.disarm_nospace
        if isinstance(fault, LeaderChange):
            breaks = fault.break_streams
            return (lambda: self.leader_change(break_streams=breaks)), None
        if isinstance(fault, Compaction):
            return self.compact, None
        raise TypeError(f"unknown fault {fault!r}")

    # -- handlers --------------------------------------------------------------------------

    def _range(self, call: UnaryCall, req: rpc_pb2.RangeRequest) -> Message:
        return self.applier.range(req)

    def _write(self, what: str, applied: Any) -> Message:
        self.committed(applied.changes, what)
        response: Message = applied.response
        return response

    def _put(self, call: UnaryCall, req: rpc_pb2.PutRequest) -> Message:
        return self._write("put", self.applier.put(req))

    def _delete(self, call: UnaryCall, req: rpc_pb2.DeleteRangeRequest) -> Message:
        return self._write("delete", self.applier.delete_range(req))

    def _txn(self, call: UnaryCall, req: rpc_pb2.TxnRequest) -> Message:
        return self.apply_txn(req)

    def _compact(self, call: UnaryCall, req: rpc_pb2.CompactionRequest) -> Message:
        response = self.applier.compact(req)
        self._log(f"compact @{req.revision}")
        return response

    def _lease_grant(self, call: UnaryCall, req: rpc_pb2.LeaseGrantRequest) -> Message:
        if req.TTL > MAX_LEASE_TTL:
            raise fail(LEASE_TTL_TOO_LARGE)
        ttl = max(req.TTL, self.min_lease_ttl)
        lease_id = req.ID or self._next_lease_id()
        response = self.applier.lease_grant(req, lease_id, ttl, self.loop.time() + ttl)
        self._arm(lease_id)
        self._log(f"grant {lease_id:x} ttl={ttl}")
        return response

    def _lease_revoke(self, call: UnaryCall, req: rpc_pb2.LeaseRevokeRequest) -> Message:
        applied = self.applier.lease_revoke(req)
        timer = self._lease_timers.pop(req.ID, None)
        if timer is not None:
            timer.cancel()
        return self._write(f"revoke {req.ID:x}", applied)

    def _lease_ttl(self, call: UnaryCall, req: rpc_pb2.LeaseTimeToLiveRequest) -> Message:
        return self.applier.lease_time_to_live(req, self.loop.time())

    def _status(self, call: UnaryCall, req: rpc_pb2.StatusRequest) -> Message:
        size = self.store.size()
        response = rpc_pb2.StatusResponse(
            version=VERSION,
            dbSize=size,
            dbSizeInUse=size,
            leader=self.member.member_id if self.quorum else 0,
            raftIndex=self.raft_index,
            raftTerm=self.member.raft_term,
            raftAppliedIndex=self.raft_index,
        )
        if self.nospace:
            response.errors.append(f"memberID:{self.member.member_id} alarm:NOSPACE ")
        self.member.fill(response.header, self.store.revision)
        return response

    def _authenticate(self, call: UnaryCall, req: rpc_pb2.AuthenticateRequest) -> Message:
        response = rpc_pb2.AuthenticateResponse(token=f"sim.{req.name}.{self.raft_index}")
        self.member.fill(response.header, self.store.revision)
        return response

    def _campaign(self, call: UnaryCall, req: v3election_pb2.CampaignRequest) -> Message | None:
        return self.elections.campaign(call, req)

    def _proclaim(self, call: UnaryCall, req: v3election_pb2.ProclaimRequest) -> Message:
        return self.elections.proclaim(req)

    def _leader(self, call: UnaryCall, req: v3election_pb2.LeaderRequest) -> Message:
        return self.elections.leader(req)

    def _resign(self, call: UnaryCall, req: v3election_pb2.ResignRequest) -> Message:
        return self.elections.resign(req)


def _failer(sim: SimEtcd, call: UnaryCall) -> Deliver:
    return lambda: sim.reply_error(call, grpc.StatusCode.UNAVAILABLE, LEADER_CHANGED)


def _ender(sim: SimEtcd, call: StreamCall) -> Deliver:
    def end() -> None:
        sim.net.to_client(call, lambda: call.end(grpc.StatusCode.UNAVAILABLE, LEADER_CHANGED))
        if call.server_stream is not None:
            call.server_stream.close()

    return end


def _describe(change: Change) -> str:
    key = change.kv.key.decode(errors="replace")
    return f"-{key}" if change.deleted else f"+{key}"


_UNARY: dict[str, _Rpc] = {
    _KV + "Range": _Rpc(rpc_pb2.RangeRequest, SimEtcd._range, quorum=True, write=False),
    _KV + "Put": _Rpc(rpc_pb2.PutRequest, SimEtcd._put, quorum=True, write=True),
    _KV + "DeleteRange": _Rpc(rpc_pb2.DeleteRangeRequest, SimEtcd._delete, quorum=True, write=True),
    _KV + "Txn": _Rpc(rpc_pb2.TxnRequest, SimEtcd._txn, quorum=True, write=True),
    _KV + "Compact": _Rpc(rpc_pb2.CompactionRequest, SimEtcd._compact, quorum=True, write=True),
    _LEASE + "LeaseGrant": _Rpc(
        rpc_pb2.LeaseGrantRequest, SimEtcd._lease_grant, quorum=True, write=True
    ),
    _LEASE + "LeaseRevoke": _Rpc(
        rpc_pb2.LeaseRevokeRequest, SimEtcd._lease_revoke, quorum=True, write=True
    ),
    _LEASE + "LeaseTimeToLive": _Rpc(
        rpc_pb2.LeaseTimeToLiveRequest, SimEtcd._lease_ttl, quorum=True, write=False
    ),
    "/etcdserverpb.Maintenance/Status": _Rpc(
        rpc_pb2.StatusRequest, SimEtcd._status, quorum=False, write=False
    ),
    "/etcdserverpb.Auth/Authenticate": _Rpc(
        rpc_pb2.AuthenticateRequest, SimEtcd._authenticate, quorum=False, write=False
    ),
    # a campaign whose client went away before it reached etcd is not started
    _ELECTION + "Campaign": _Rpc(
        v3election_pb2.CampaignRequest, SimEtcd._campaign, quorum=True, write=False
    ),
    _ELECTION + "Proclaim": _Rpc(
        v3election_pb2.ProclaimRequest, SimEtcd._proclaim, quorum=True, write=True
    ),
    _ELECTION + "Leader": _Rpc(
        v3election_pb2.LeaderRequest, SimEtcd._leader, quorum=True, write=False
    ),
    _ELECTION + "Resign": _Rpc(
        v3election_pb2.ResignRequest, SimEtcd._resign, quorum=True, write=True
    ),
}


__all__ = ["LEADER_CHANGED", "VERSION", "LinkMode", "SimEtcd", "SimTransport"]
