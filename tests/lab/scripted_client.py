"""A scripted DHCP client core and an in-memory commit path, for engine tests. Pure; no I/O.

`ScriptedClient` builds the messages a real client sends in each RFC 2131 state (4.4) and
reads replies. `MemoryEtcd` applies `BindingWrite`s with etcd's compare rules and incrementing
revisions (and can be told to fail); it is a `Committer` that answers at once. `Server` drives
the spoke's real request path (`spoke.exchange.Exchange`) over the engine, its table and the
memory store, and reports what one request led to: the engine's first decision, the last one,
the reply the client got and whether a binding was committed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

from opentelemetry.trace import Span

from hubspoke.etcd.errors import EtcdError
from hubspoke.model import Binding, Block, Pool, Scope, Versioned
from spoke.dhcp.decisions import (
    BindingWrite,
    CommitKind,
    Decision,
    Drop,
    Ingress,
    Reply,
    ServingPolicy,
)
from spoke.dhcp.engine import Engine, EngineConfig
from spoke.dhcp.message import BROADCAST_FLAG, ZERO, Message, MessageType, Op, Opt
from spoke.dhcp.reply import Outgoing
from spoke.exchange import Exchange as RequestPath
from spoke.failover.supervisor import Route
from spoke.leases.commit import Conflict, Done, Durable
from spoke.leases.table import BindingTable
from spoke.telemetry import DhcpTracer


def blocks_of(scope: Scope, size: int = 64) -> list[Block]:
    """Cut every pool of `scope` into blocks of `size` addresses."""
    out = []
    for pool in scope.pools:
        first = int(pool.first)
        while first <= int(pool.last):
            last = min(first + size - 1, int(pool.last))
            out.append(Block(scope.name, IPv4Address(first), IPv4Address(last)))
            first = last + 1
    return out


class ClientState(enum.Enum):
    INIT = "init"
    SELECTING = "selecting"
    REQUESTING = "requesting"
    BOUND = "bound"


@dataclass
class ScriptedClient:
    mac: bytes
    client_id: bytes | None = None
    giaddr: IPv4Address = ZERO
    relay_info: bytes | None = None
    params: tuple[int, ...] = (1, 3, 6, 15)
    broadcast: bool = False
    xid: int = 0x1000
    state: ClientState = ClientState.INIT
    offer: Message | None = None
    address: IPv4Address | None = None
    server_id: IPv4Address | None = None
    lease: int | None = None
    naks: int = 0
    received: list[Message] = field(default_factory=list)

    def _msg(
        self,
        mtype: MessageType,
        *,
        ciaddr: IPv4Address = ZERO,
        options: Iterable[tuple[int, bytes]] = (),
        broadcast: bool | None = None,
    ) -> Message:
        self.xid += 1
        opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes([mtype])}
        if self.client_id is not None:
            opts[Opt.CLIENT_ID] = self.client_id
        opts.update(options)
        if self.relay_info is not None:
            opts[Opt.RELAY_AGENT_INFO] = self.relay_info
        flag = self.broadcast if broadcast is None else broadcast
        return Message(
            op=Op.BOOTREQUEST,
            xid=self.xid,
            chaddr=self.mac.ljust(16, b"\0"),
            hops=1 if self.giaddr != ZERO else 0,
            flags=BROADCAST_FLAG if flag else 0,
            ciaddr=ciaddr,
            giaddr=self.giaddr,
            options=opts,
        )

    def discover(self, requested: IPv4Address | None = None, lease: int | None = None) -> Message:
        opts: list[tuple[int, bytes]] = [(Opt.PARAMETER_REQUEST_LIST, bytes(self.params))]
        if requested is not None:
            opts.append((Opt.REQUESTED_ADDRESS, requested.packed))
        if lease is not None:
            opts.append((Opt.LEASE_TIME, lease.to_bytes(4, "big")))
        self.state = ClientState.SELECTING
        return self._msg(MessageType.DISCOVER, options=opts)

    def select(self, lease: int | None = None) -> Message:
        """REQUEST in SELECTING for the offer last received."""
        assert self.offer is not None and self.offer.server_id is not None
        opts: list[tuple[int, bytes]] = [
            (Opt.REQUESTED_ADDRESS, self.offer.yiaddr.packed),
            (Opt.SERVER_ID, self.offer.server_id.packed),
            (Opt.PARAMETER_REQUEST_LIST, bytes(self.params)),
        ]
        if lease is not None:
            opts.append((Opt.LEASE_TIME, lease.to_bytes(4, "big")))
        self.state = ClientState.REQUESTING
        return self._msg(MessageType.REQUEST, options=opts)

    def select_other(self, server_id: IPv4Address, ip: IPv4Address) -> Message:
        opts = [(Opt.REQUESTED_ADDRESS, ip.packed), (Opt.SERVER_ID, server_id.packed)]
        return self._msg(MessageType.REQUEST, options=opts)

    def init_reboot(self, ip: IPv4Address) -> Message:
        opts = [
            (Opt.REQUESTED_ADDRESS, ip.packed),
            (Opt.PARAMETER_REQUEST_LIST, bytes(self.params)),
        ]
        self.state = ClientState.REQUESTING
        return self._msg(MessageType.REQUEST, options=opts)

    def renew(self, ip: IPv4Address | None = None, lease: int | None = None) -> Message:
        """RENEWING (unicast) and REBINDING (broadcast) look alike to a server: ciaddr set."""
        addr = ip or self.address
        assert addr is not None
        opts = [(Opt.LEASE_TIME, lease.to_bytes(4, "big"))] if lease is not None else []
        return self._msg(MessageType.REQUEST, ciaddr=addr, options=opts, broadcast=False)

    def decline(self, ip: IPv4Address, server_id: IPv4Address) -> Message:
        opts = [(Opt.REQUESTED_ADDRESS, ip.packed), (Opt.SERVER_ID, server_id.packed)]
        self.state = ClientState.INIT
        return self._msg(MessageType.DECLINE, options=opts)

    def release(self) -> Message:
        assert self.address is not None and self.server_id is not None
        msg = self._msg(
            MessageType.RELEASE,
            ciaddr=self.address,
            options=[(Opt.SERVER_ID, self.server_id.packed)],
        )
        self.state, self.address = ClientState.INIT, None
        return msg

    def inform(self, ciaddr: IPv4Address) -> Message:
        opts = [(Opt.PARAMETER_REQUEST_LIST, bytes(self.params))]
        return self._msg(MessageType.INFORM, ciaddr=ciaddr, options=opts)

    def receive(self, reply: Message) -> None:
        self.received.append(reply)
        mtype = reply.message_type
        if mtype is MessageType.OFFER and self.state is ClientState.SELECTING:
            self.offer = reply
        elif mtype is MessageType.ACK and reply.yiaddr != ZERO:
            self.state, self.address = ClientState.BOUND, reply.yiaddr
            self.server_id, self.lease = reply.server_id, reply.lease_time
        elif mtype is MessageType.NAK:
            self.naks += 1
            self.state, self.address, self.offer = ClientState.INIT, None, None


class MemoryEtcd:
    """The binding keys and block keys, with etcd's revision and compare semantics; a
    `Committer` whose outcome is known at once."""

    path = "etcd"

    def __init__(self, table: BindingTable | None = None) -> None:
        self.revision = 1
        self.leases: dict[tuple[str, IPv4Address], tuple[Binding, Versioned]] = {}
        self.blocks: dict[Block, int] = {}
        self.fail_next = 0
        self.writes: list[BindingWrite] = []
        self.table = table

    def own(self, blocks: Iterable[Block]) -> dict[Block, int]:
        for b in blocks:
            self.revision += 1
            self.blocks[b] = self.revision
        return dict(self.blocks)

    def put(self, binding: Binding) -> Versioned:
        """A write by someone else (another spoke), unconditional."""
        self.revision += 1
        held = self.leases.get((binding.scope, binding.ip))
        create = held[1].create_revision if held is not None else self.revision
        version = Versioned(create, self.revision)
        self.leases[(binding.scope, binding.ip)] = (binding, version)
        return version

    def commit(self, w: BindingWrite) -> Versioned | None:
        if self.fail_next:
            self.fail_next -= 1
            return None
        held = self.leases.get((w.scope, w.ip))
        if w.expected is None and held is not None:
            return None
        if w.expected is not None and (
            held is None or held[1].mod_revision != w.expected.mod_revision
        ):
            return None
        if w.fence is not None and self.blocks.get(w.fence[0]) != w.fence[1]:
            return None
        self.writes.append(w)
        return self.put(w.binding)

    def submit(self, write: BindingWrite, kind: CommitKind, done: Done) -> None:
        """As `LeaseStore.commit`: a failed compare refreshes the table from what is held."""
        version = self.commit(write)
        if version is not None:
            done(Durable(version))
            return
        held = self.leases.get((write.scope, write.ip))
        if self.table is not None:
            self.table.apply(
                write.scope, write.ip, held[0] if held else None, held[1] if held else None
            )
        done(Conflict(held, fence_lost=False))


@dataclass(frozen=True)
class Exchange:
    """What one request led to: the engine's first decision and what the client got."""

    decision: Decision
    final: Decision
    sent: Outgoing | None
    committed: bool


class _Gate:
    """The failover supervisor's part: always answering, under `policy`, through etcd."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def route(self) -> Route:
        return Route(self.server.policy, self.server.etcd)

    def annotate(self, span: Span) -> None:
        pass

    def commit_failed(self, error: EtcdError) -> None:
        raise AssertionError(f"the memory store does not fail that way: {error!r}")

    def commit_unknown(self, write: BindingWrite) -> None:
        raise AssertionError("the memory store always knows")


@dataclass
class _Record:
    """The request path's tally and outbox: every decision and every reply, in order."""

    decisions: list[Decision] = field(default_factory=list)
    sent: list[Outgoing] = field(default_factory=list)

    def packet_in(self, kind: str) -> None:
        pass

    def packet_out(self, kind: str) -> None:
        pass

    def decided(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def acked(self, scope: str) -> None:
        pass

    def commit_started(self) -> float:
        return 0.0

    def commit_ended(self, started: float) -> None:
        pass

    def send(self, out: Outgoing) -> None:
        self.sent.append(out)


class Server:
    """Engine + table + memory etcd, driven through the spoke's request path. `policy` is the
    serving policy the failover supervisor would give (NORMAL by default)."""

    def __init__(
        self,
        scopes: Sequence[Scope],
        *,
        config: EngineConfig | None = None,
        reuse_delay: float = 10.0,
        block_size: int = 64,
        own: bool = True,
    ) -> None:
        self.table = BindingTable(reuse_delay=reuse_delay)
        self.etcd = MemoryEtcd(self.table)
        self.engine = Engine(config or EngineConfig(node="spoke-a"), scopes, self.table)
        self.policy = ServingPolicy()
        self.now = 0.0
        self._record = _Record()
        self.path = RequestPath(
            self.engine,
            _Gate(self),
            server_ids={},
            tally=self._record,
            outbox=self._record,
            tracer=DhcpTracer(None),
            clock=lambda: self.now,
            max_inflight=256,
        )
        if own:
            for s in scopes:
                fenced = self.etcd.own(blocks_of(s, block_size))
                self.table.set_blocks(
                    s.name, {b: r for b, r in fenced.items() if b.scope == s.name}
                )

    def handle(self, msg: Message, ingress: Ingress, now: float) -> Exchange:
        self.now = now
        record = self._record
        record.decisions.clear()
        record.sent.clear()
        writes = len(self.etcd.writes)
        self.path.on_request(msg, ingress)
        assert record.decisions, "the request path decided nothing"
        first, final = record.decisions[0], record.decisions[-1]
        sent = record.sent[-1] if record.sent else None
        return Exchange(first, final, sent, len(self.etcd.writes) > writes)

    def sync(self, binding: Binding, version: Versioned) -> None:
        """A watch event: apply someone else's write to our table."""
        self.table.apply(binding.scope, binding.ip, binding, version)

    def talk(self, client: ScriptedClient, msg: Message, ingress: Ingress, now: float) -> Exchange:
        ex = self.handle(msg, ingress, now)
        if ex.sent is not None:
            client.receive(ex.sent.message)
        return ex

    def dora(
        self,
        client: ScriptedClient,
        ingress: Ingress,
        now: float,
        requested: IPv4Address | None = None,
        lease: int | None = None,
    ) -> IPv4Address | None:
        """DISCOVER, OFFER, REQUEST, ACK; the bound address or None."""
        offer = self.talk(client, client.discover(requested, lease), ingress, now)
        if not isinstance(offer.final, Reply):
            return None
        self.talk(client, client.select(), ingress, now)
        return client.address


def drop_reason(d: Decision) -> str | None:
    return d.reason if isinstance(d, Drop) else None


# -- a small site for the tests: one direct LAN, two relayed subnets ----------------------
ROUTER = IPv4Address("10.0.0.1")
DNS = (IPv4Address("10.0.0.53"), IPv4Address("10.0.0.54"))
LAN = Ingress("eth0", IPv4Address("10.0.0.2"))
UPLINK = Ingress("eth1", IPv4Address("172.16.0.2"))
RELAY_B = IPv4Address("10.1.0.1")
RELAY_C = IPv4Address("192.168.50.1")


def site_scopes(**lan: object) -> list[Scope]:
    """Scope "lan" (direct on eth0), "office" (relayed, giaddr in subnet), "lab" (relayed by
    a relay address outside its subnet). Keyword arguments override fields of "lan"."""
    base = Scope(
        name="lan",
        subnet=IPv4Network("10.0.0.0/24"),
        pools=(Pool(IPv4Address("10.0.0.100"), IPv4Address("10.0.0.199")),),
        lease_time=3600,
        min_lease_time=300,
        max_lease_time=7200,
        options={
            3: ROUTER.packed,
            6: b"".join(d.packed for d in DNS),
            15: b"example.test",
            42: IPv4Address("10.0.0.123").packed,
        },
        interfaces=("eth0",),
    )
    office = Scope(
        name="office",
        subnet=IPv4Network("10.1.0.0/24"),
        pools=(Pool(IPv4Address("10.1.0.10"), IPv4Address("10.1.0.20")),),
        options={3: RELAY_B.packed},
    )
    lab = Scope(
        name="lab",
        subnet=IPv4Network("10.2.0.0/24"),
        pools=(Pool(IPv4Address("10.2.0.10"), IPv4Address("10.2.0.13")),),
        relay_addresses=(RELAY_C,),
    )
    return [replace(base, **lan), office, lab]  # type: ignore[arg-type]


def mac(n: int) -> bytes:
    return bytes([0x02, 0, 0, 0, n >> 8 & 0xFF, n & 0xFF])
