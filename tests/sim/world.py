"""Owns the simulated cluster: spokes, a hub, DHCP clients and faults on one virtual loop.

Everything that decides runs for real: each spoke is built from the same parts as
`spoke.runtime.Spoke` (etcd client, session, `LeaseStore`, `CommitQueue`, `AssignmentFollower`,
`ScopeFollower`, `FailoverSupervisor` with its journal on a tmpfs file, `Engine`, the request
path `Exchange`);
the hub is the real `HubCampaign` and `HubRole`; etcd is `tests.sim.etcd.SimEtcd`. Only the
sockets are replaced: a client's broadcast reaches every running spoke, a unicast the spoke it
names, each after a small seeded delay, and replies go straight back to the client.

Clients follow RFC 2131's client states (INIT, SELECTING, REQUESTING, BOUND, RENEWING,
REBINDING, INIT-REBOOT; RELEASE now and then) and record every lease they accept on the true
(virtual) clock. Most short outages also bring a crowd of brand-new clients (`Visitor`) from
just before the heal through the spokes' RECOVER, where grants are journaled while the journal
is replayed and truncated (the one-turn race of issue 11). Invariants, checked as the run goes
and at its end:

- `duplicate`: a client accepts a lease on an address while another client's accepted lease
  on it is still running (the promise);
- `lost`: once faults stop and spokes settle, a lease a client still holds is missing from
  etcd (another client's record, or an expiry before the lease's end);
- `not-normal`: a spoke not NORMAL (or not registered) some time after the last fault healed;
- `unreplayed`: a NORMAL spoke still holds journal lines, bindings granted from the journal or
  commits of unknown outcome that etcd has not seen;
- `alarm`: a spoke's replay raised `failover.duplicate_alarm`;
- `crash`: a task of a spoke or the hub died of an exception.

A run is a function of its seed (`run_seed`); the same seed replays the same schedule in one
process, and across processes under PYTHONHASHSEED=0 (`python -m tests.sim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from hub.api.view import HubView
from hub.campaign import HubCampaign
from hub.config import GrpcSection, HubRoleConfig, PlannerSection
from hubspoke.assign import Member
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdError
from hubspoke.etcd.session import Session
from hubspoke.keys import Keys
from hubspoke.model import Scope
from hubspoke.scopes.store import create_scope
from hubspoke.states import State
from hubspoke.values import decode_binding
from spoke.assign.follow import AssignmentFollower
from spoke.dhcp.decisions import Ingress
from spoke.dhcp.engine import Engine, EngineConfig
from spoke.dhcp.message import Message, MessageType, Opt
from spoke.dhcp.reply import Outgoing
from spoke.exchange import Exchange
from spoke.failover.machine import FailoverParams
from spoke.failover.supervisor import FailoverSupervisor
from spoke.leases.batch import CommitQueue
from spoke.leases.store import LeaseStore
from spoke.leases.table import BindingTable
from spoke.metrics import Metrics, Tally
from spoke.reporter import Counters
from spoke.scopefollow import ScopeFollower
from spoke.telemetry import DhcpTracer
from tests.lab.scripted_client import ScriptedClient
from tests.sim.etcd import SimEtcd

ROOT = "/sim"
SCOPE = "lan"
SUBNET = "10.9.0.0/24"
POOL = ("10.9.0.10", "10.9.0.89")  # 80 addresses: reuse happens
SESSION_TTL = 3
LEASE = 60
FAILOVER = FailoverParams(interrupted_after=1.0, max_interrupted=10.0, mclt=20)
REUSE_DELAY = 2.0  # > the spokes' clock offsets (up to 0.5 s each way)
OFFER_LIFETIME = 5.0
LOOP_TURN = 0.002  # a busy loop: callbacks due within 2 ms run in one iteration
MAX_INFLIGHT = 2  # commit slots per path: low, as the load is (a hung etcd fills them at once)

log = logging.getLogger("hubspoke.sim")


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    at: float
    detail: str


async def _inline(fn: Callable[[], Any]) -> Any:
    return fn()


def scope_doc() -> dict[str, Any]:
    return {
        "name": SCOPE,
        "subnet": SUBNET,
        "pools": [f"{POOL[0]}-{POOL[1]}"],
        "interfaces": ["lan"],
        "lease_time": LEASE,
        "min_lease_time": 1,
        "max_lease_time": LEASE,
    }


class _NullServer:
    async def stop(self) -> None:
        return None


async def _no_api(view: HubView) -> _NullServer:
    return _NullServer()


async def _kill(task: asyncio.Task[None] | None, sessions: list[Session]) -> None:
    """A kill -9 of a process: its task cancelled, its sessions' keep-alives stopped without
    a revoke (their leases expire on their own)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for s in sessions:
        await s.abandon()
    sessions.clear()


# -- a spoke -------------------------------------------------------------------------------
class SimSpoke:
    """One spoke process. `start()` runs it until `crash()` (a kill -9: nothing graceful)."""

    def __init__(self, world: World, name: str, ip: IPv4Address, offset: float) -> None:
        self.world = world
        self.name = name
        self.ip = ip
        self.offset = offset  # its wall clock's error, seconds
        self.journal_path = world.workdir / f"{name}.journal"
        self.task: asyncio.Task[None] | None = None
        self.serving = False
        self.failover: FailoverSupervisor | None = None
        self.engine: Engine | None = None
        self.exchange: Exchange | None = None
        self.assignments: AssignmentFollower | None = None
        self.sessions: list[Session] = []
        self.tracer = DhcpTracer(None)
        self.restarts = 0

    def wall(self) -> float:
        return self.world.now() + self.offset

    @property
    def state(self) -> State | None:
        return self.failover.state if self.failover is not None else None

    def start(self) -> None:
        if self.task is not None and not self.task.done():
            return  # already running (two crash faults overlapped: one restart is enough)
        self.serving = False
        self.task = asyncio.get_running_loop().create_task(self._main(), name=self.name)
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.world.violate("crash", f"{self.name}: {exc!r}")

    async def crash(self) -> None:
        if self.failover is not None:
            seen = self.world.transitions.setdefault(self.name, [])
            seen += [t.target.value for t in self.failover.transitions]
        task, self.task = self.task, None
        self.serving = False
        await _kill(task, self.sessions)
        self.failover = None
        self.engine = self.exchange = self.assignments = None

    async def _session(self, client: EtcdClient) -> Session:
        delay = 0.25
        while True:
            try:
                return await Session.open(client, ttl=SESSION_TTL)
            except EtcdError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _main(self) -> None:
        while True:
            try:
                await self._serve()
                return
            except* EtcdError:
                # a start interrupted by etcd: start again (as a supervisor would restart it)
                for s in self.sessions:
                    await s.abandon()
                self.sessions.clear()
                self.serving = False
                await asyncio.sleep(1.0)

    async def _serve(self) -> None:
        world = self.world
        client = world.etcd.client(self.name)
        keys = world.keys
        table = BindingTable(reuse_delay=REUSE_DELAY, hold=FAILOVER.mclt)
        session = await self._session(client)
        self.sessions.append(session)
        store = LeaseStore(
            client, keys, table, self.name, commit_timeout=FAILOVER.interrupted_after
        )
        commits = CommitQueue(store)
        assignments = AssignmentFollower(
            client, keys, self.name, table, offer_lifetime=OFFER_LIFETIME, clock=self.wall
        )
        self.assignments = assignments
        scopes_follower = ScopeFollower(client, keys, self._on_scopes)
        await scopes_follower.load()
        scopes = scopes_follower.scopes
        assignments.set_scopes(scopes)
        await assignments.load()
        await store.load()
        failover = FailoverSupervisor(
            FAILOVER,
            self.journal_path,
            node=self.name,
            client=client,
            store=store,
            commits=commits,
            table=table,
            session=session,
            register=lambda s: self._register(client, s),
            clock=self.wall,
            offload=_inline,
        )
        engine = Engine(
            EngineConfig(
                node=self.name,
                offer_lifetime=OFFER_LIFETIME,
                decline_probation=60.0,
                server_ids=frozenset({self.ip}),
            ),
            scopes,
            table,
            is_mine=assignments.is_mine,
            conflicted=failover.conflicted,
        )
        exchange = Exchange(
            engine,
            failover,
            server_ids={"lan": self.ip},
            tally=Tally(Metrics(), Counters()),
            outbox=self,
            tracer=self.tracer,
            clock=self.wall,
            max_inflight=MAX_INFLIGHT,
        )
        self.failover, self.engine, self.exchange = failover, engine, exchange
        async with asyncio.TaskGroup() as tg:
            tg.create_task(store.follow())
            tg.create_task(commits.run())
            tg.create_task(failover.run())
            tg.create_task(scopes_follower.follow())
            tg.create_task(assignments.follow())
            tg.create_task(self._track_sessions(failover))
            await self._register(client, session)
            failover.ready()
            self.serving = True

    async def _track_sessions(self, failover: FailoverSupervisor) -> None:
        """Remember every session the supervisor opens, so a crash abandons it."""
        while True:
            if failover.session not in self.sessions:
                self.sessions.append(failover.session)
            await asyncio.sleep(0.5)

    def _on_scopes(self, scopes: tuple[Scope, ...]) -> None:
        if self.assignments is not None:
            self.assignments.set_scopes(scopes)
        if self.engine is not None:
            self.engine.set_scopes(scopes)

    async def _register(self, client: EtcdClient, session: Session) -> None:
        member = Member(
            node=self.name,
            lease=session.lease_id,
            role="spoke",
            hub_eligible=False,
            grpc_address=None,
            server_ids=(str(self.ip),),
            started=round(self.wall(), 3),
            extra={},
        )
        await client.put(self.world.keys.member(self.name), member.encode(), lease=session.lease_id)

    # -- the packet path: the spoke's own, without the codec ------------------------------
    def receive(self, msg: Message, broadcast: bool) -> None:
        exchange = self.exchange
        if self.serving and exchange is not None:
            exchange.on_request(msg, Ingress("lan", self.ip, broadcast))

    def send(self, out: Outgoing) -> None:
        """The exchange's outbox: the reply reaches the simulated segment."""
        self.world.deliver_reply(self, out.message)


# -- a client ------------------------------------------------------------------------------
@dataclass
class Held:
    """A lease a client accepted: valid on [start, end) of true time."""

    client: int
    ip: IPv4Address
    start: float
    end: float


class SimClient:
    """One DHCP client (RFC 2131 4.4), recording what it accepts."""

    def __init__(self, world: World, n: int, rng: random.Random, mac: bytes | None = None) -> None:
        self.world = world
        self.n = n
        self.rng = rng
        self.core = ScriptedClient(mac or bytes([2, 0, 0, 0, n // 256, n % 256]))
        self.key = self.core.discover().client_key
        world.routes[self.core.mac] = self
        self.inbox: asyncio.Queue[tuple[SimSpoke, Message]] = asyncio.Queue()
        self.held: Held | None = None
        self.server: SimSpoke | None = None
        self.waits: list[float] = []  # INIT -> BOUND, for new clients

    def deliver(self, spoke: SimSpoke, msg: Message) -> None:
        self.inbox.put_nowait((spoke, msg))

    async def _exchange(
        self, msg: Message, to: SimSpoke | None, want: set[MessageType], wait: float
    ) -> tuple[SimSpoke, Message] | None:
        """Send `msg` (broadcast when `to` is None) and wait for a reply of a wanted type."""
        while not self.inbox.empty():
            self.inbox.get_nowait()
        self.world.send(self, msg, to)
        deadline = self.world.now() + wait
        while True:
            left = deadline - self.world.now()
            if left <= 0:
                return None
            try:
                async with asyncio.timeout(left):
                    spoke, reply = await self.inbox.get()
            except TimeoutError:
                return None
            if reply.xid == msg.xid and reply.message_type in want:
                return spoke, reply

    def _lose(self) -> None:
        if self.held is not None:
            self.world.ended(self.held, self.world.now())
        self.held = None

    async def _dora(self, lease: int | None, wait: float) -> bool:
        """DISCOVER, then REQUEST what the first OFFER names (SELECTING); accepted an ACK?"""
        offer = await self._exchange(
            self.core.discover(lease=lease), None, {MessageType.OFFER}, wait
        )
        if offer is None:
            return False
        spoke, msg = offer
        options = [(Opt.REQUESTED_ADDRESS, msg.yiaddr.packed), (Opt.SERVER_ID, spoke.ip.packed)]
        if lease is not None:
            options.append((Opt.LEASE_TIME, lease.to_bytes(4, "big")))
        req = self.core._msg(MessageType.REQUEST, options=options)
        got = await self._exchange(req, None, {MessageType.ACK, MessageType.NAK}, wait)
        if got is None or got[1].message_type is not MessageType.ACK:
            return False
        self._accept(*got)
        return True

    def _accept(self, spoke: SimSpoke, ack: Message) -> None:
        now = self.world.now()
        lease = ack.lease_time or 0
        ip = ack.yiaddr
        if self.held is not None and self.held.ip != ip:
            self._lose()
        held = Held(self.n, ip, now if self.held is None else self.held.start, now + lease)
        self.world.accepted(held, now)
        self.held = held
        self.server = spoke
        self.core.address, self.core.server_id = ip, ack.server_id

    async def run(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, 20))
        while True:
            await self._init()
            await self._bound()

    async def _init(self) -> None:
        started = self.world.now()
        backoff = 2.0
        while True:
            requested = self.held.ip if self.held is not None else None
            if requested is not None and self.rng.random() < 0.5:
                # INIT-REBOOT: ask for the address we had
                msg = self.core.init_reboot(requested)
                got = await self._exchange(msg, None, {MessageType.ACK, MessageType.NAK}, 3.0)
                if got is not None and got[1].message_type is MessageType.ACK:
                    self._accept(*got)
                    return
                self._lose()
            if await self._dora(None, 3.0):
                self.waits.append(self.world.now() - started)
                return
            await asyncio.sleep(self.rng.uniform(0.5, backoff))
            backoff = min(backoff * 2, 16.0)

    async def _bound(self) -> None:
        assert self.held is not None
        while self.held is not None:
            held = self.held
            length = held.end - self.world.now()
            t1, t2 = held.end - length / 2, held.end - length / 8
            # now and then: give the address back, or reboot
            if self.rng.random() < 0.05:
                await asyncio.sleep(self.rng.uniform(0, max(length / 2, 0.1)))
                if self.held is held and self.server is not None:
                    self.world.send(self, self.core.release(), self.server)
                    self._lose()
                    await asyncio.sleep(self.rng.uniform(1, 10))
                return
            if self.rng.random() < 0.05:
                await asyncio.sleep(self.rng.uniform(0, max(length / 2, 0.1)))
                return  # reboot: INIT (INIT-REBOOT with the address it had)
            await asyncio.sleep(max(t1 - self.world.now(), 0))
            while self.world.now() < t2 and self.held is held:  # RENEWING, unicast
                got = await self._exchange(
                    self.core.renew(held.ip), self.server, {MessageType.ACK, MessageType.NAK}, 2.0
                )
                if got is not None:
                    if got[1].message_type is MessageType.ACK and got[1].yiaddr == held.ip:
                        self._accept(*got)
                    else:
                        self._lose()
                    break
                await asyncio.sleep(min(4.0, max(t2 - self.world.now(), 0)))
            if self.held is not held:
                continue
            while self.world.now() < held.end and self.held is held:  # REBINDING, broadcast
                msg = self.core.renew(held.ip)
                got = await self._exchange(msg, None, {MessageType.ACK, MessageType.NAK}, 2.0)
                if got is not None:
                    if got[1].message_type is MessageType.ACK and got[1].yiaddr == held.ip:
                        self._accept(*got)
                    else:
                        self._lose()
                    break
                await asyncio.sleep(min(2.0, max(held.end - self.world.now(), 0)))
            if self.held is held and self.world.now() >= held.end:
                self._lose()  # expired
                return


class Probe(SimClient):
    """A stream of brand-new clients, one every `every` seconds, each asking for a short lease
    and never renewing: when did a new client last get served? (`successes`, true time)."""

    LEASE = 4

    def __init__(self, world: World, rng: random.Random, every: float = 1.0) -> None:
        super().__init__(world, 0xFF00, rng)
        self.every = every
        self.k = 0
        self.successes: list[float] = []

    def _fresh(self) -> None:
        self.k += 1
        world = self.world
        world.routes.pop(self.core.mac, None)
        self.n = 100_000 + self.k
        self.core = ScriptedClient(
            bytes([2, 0, 1, self.k >> 16 & 0xFF, self.k >> 8 & 0xFF, self.k & 0xFF])
        )
        self.key = self.core.discover().client_key
        world.routes[self.core.mac] = self
        self.held = None

    async def run(self) -> None:
        while True:
            self._fresh()
            asked = self.world.now()
            if await self._dora(self.LEASE, 2.0):
                self.successes.append(self.world.now())
            await asyncio.sleep(max(0.0, asked + self.every - self.world.now()))


class Visitor(SimClient):
    """One of a crowd of brand-new clients arriving together (power back on a floor, a relay's
    link back up): DORA for a short lease at `at` (true time), one retry, then a RELEASE or a
    silent departure. A crowd timed at a fault's healing lands on spokes in RECOVER, where
    every grant is journaled while the journal is being replayed and truncated."""

    LEASE = 8

    def __init__(self, world: World, n: int, mac: bytes, rng: random.Random, at: float) -> None:
        super().__init__(world, n, rng, mac)
        self.at = at

    async def run(self) -> None:
        world = self.world
        try:
            await asyncio.sleep(max(0.0, self.at - world.now()))
            for _ in range(2):
                if await self._dora(self.LEASE, 2.0):
                    break
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))
            if self.held is None:
                return
            await asyncio.sleep(self.rng.uniform(0.1, 1.5))
            if self.held is not None and self.server is not None and self.rng.random() < 0.8:
                world.send(self, self.core.release(), self.server)
                self._lose()
        finally:
            world.routes.pop(self.core.mac, None)


# -- the world -----------------------------------------------------------------------------
@dataclass
class Plan:
    """What one seed runs: sizes, a fault schedule and crowds of new clients (plain data,
    printed on failure)."""

    spokes: int
    clients: int
    faults: list[tuple[float, float, str, str]]  # (at, duration, kind, target)
    horizon: float
    settle: float = 60.0
    crowds: list[tuple[float, int, float]] = field(default_factory=list)  # (at, size, spread)


FAULT_KINDS = (
    "etcd-freeze",
    "quorum-loss",
    "nospace",
    "leader-change",
    "compaction",
    "cut-blackhole",
    "cut-refuse",
    "spoke-crash",
    "session-revoke",
    "hub-crash",
)


# When a fault of each kind heals, `duration` after it began (see `World.fault`): the spokes
# it interrupted go through RECOVER then. A revoked session is noticed at once (RECOVER).
CROWDED_OUTAGE = 8.0  # shorter than max_interrupted: interrupted spokes still take new clients
HEALS: dict[str, Callable[[float], float]] = {
    "etcd-freeze": lambda d: d,
    "quorum-loss": lambda d: d,
    "nospace": lambda d: d,
    "cut-blackhole": lambda d: d,
    "cut-refuse": lambda d: d,
    "spoke-crash": lambda d: min(d, 30.0),
    "session-revoke": lambda d: 0.0,
}


def make_plan(rng: random.Random, horizon: float = 200.0) -> Plan:
    """`horizon`: virtual seconds of load with faults (then faults heal and spokes settle)."""
    spokes = rng.choice((2, 2, 3))
    clients = rng.randint(12, 30)
    faults = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(FAULT_KINDS)
        at = rng.uniform(min(30.0, horizon / 4), horizon - 20)
        duration = rng.choice((rng.uniform(0.5, 5.0), rng.uniform(5.0, 30.0), rng.uniform(30, 90)))
        target = f"s{rng.randint(1, spokes)}"
        faults.append((round(at, 3), round(duration, 3), kind, target))
    faults.sort()
    # Drawn after the faults, so a seed's faults do not depend on its crowds.
    crowds = []
    for at, duration, kind, _ in faults:
        heal = HEALS.get(kind)
        if heal is None or heal(duration) > CROWDED_OUTAGE or rng.random() < 0.2:
            continue
        # From before the heal (new clients journaled while interrupted) through the spokes'
        # noticing etcd is back (a keep-alive and a tick later) and their RECOVER.
        when = at + heal(duration) - rng.uniform(0.5, 1.5)
        crowds.append((round(when, 3), rng.randint(40, 70), round(rng.uniform(2.0, 3.0), 3)))
    settle = min(60.0, max(40.0, horizon / 2))
    return Plan(spokes, clients, faults, horizon, settle=settle, crowds=crowds)


class World:
    def __init__(self, seed: int, plan: Plan | None = None, horizon: float = 200.0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.plan = plan or make_plan(random.Random(seed ^ 0x5EED), horizon)
        self.keys = Keys(ROOT)
        self.workdir = Path(tempfile.mkdtemp(prefix="hubspoke-sim-", dir=_tmpfs()))
        self.etcd: SimEtcd = None  # type: ignore[assignment]  # built on the loop
        self.spokes: dict[str, SimSpoke] = {}
        self.clients: list[SimClient] = []
        self.violations: list[Violation] = []
        self.by_ip: dict[IPv4Address, list[Held]] = {}
        self.hub_task: asyncio.Task[None] | None = None
        self.hub_sessions: list[Session] = []
        self.last_heal = 0.0
        self.started = 0.0
        self.acks = 0
        self.transitions: dict[str, list[str]] = {}
        self.routes: dict[bytes, SimClient] = {}
        self.windows: list[tuple[str, float, float]] = []  # (fault kind, began, healed)
        self.probe: Probe | None = None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def violate(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, round(self.now() - self.started, 3), detail))

    # -- the recorded leases ---------------------------------------------------------------
    def accepted(self, held: Held, now: float) -> None:
        for other in self.by_ip.get(held.ip, []):
            if other.client != held.client and other.end > now:
                self.violate(
                    "duplicate",
                    f"{held.ip}: client {held.client} accepted a lease to {held.end:.1f} "
                    f"while client {other.client}'s runs to {other.end:.1f}",
                )
        leases = [h for h in self.by_ip.get(held.ip, []) if h.client != held.client]
        self.by_ip[held.ip] = [*leases, held]
        self.acks += 1

    def ended(self, held: Held, at: float) -> None:
        held.end = min(held.end, at)

    # -- the network -----------------------------------------------------------------------
    def send(self, client: SimClient, msg: Message, to: SimSpoke | None) -> None:
        loop = asyncio.get_running_loop()
        targets = list(self.spokes.values()) if to is None else [to]
        for spoke in targets:
            delay = self.rng.uniform(0.0001, 0.002)
            loop.call_later(delay, spoke.receive, msg, to is None)

    def deliver_reply(self, spoke: SimSpoke, msg: Message) -> None:
        client = self.routes.get(bytes(msg.chaddr[:6]))
        if client is not None:
            delay = self.rng.uniform(0.0001, 0.002)
            asyncio.get_running_loop().call_later(delay, client.deliver, spoke, msg)

    # -- the hub ---------------------------------------------------------------------------
    def hub_config(self) -> HubRoleConfig:
        return HubRoleConfig(
            node="hub",
            grpc=GrpcSection(host="127.0.0.1", port=1),
            planner=PlannerSection(
                interval=1.0,
                block_size=8,
                low_watermark=2,
                max_interrupted=FAILOVER.max_interrupted,
                mclt=float(FAILOVER.mclt),
            ),
            session_ttl=SESSION_TTL,
        )

    def start_hub(self) -> None:
        self.hub_task = asyncio.get_running_loop().create_task(self._hub(), name="hub")

    async def _hub(self) -> None:
        client = self.etcd.client("hub")
        cfg = self.hub_config()
        stop = asyncio.Event()
        while True:
            try:
                session = await Session.open(client, ttl=SESSION_TTL)
            except EtcdError:
                await asyncio.sleep(1.0)
                continue
            self.hub_sessions.append(session)
            try:
                member = Member(node="hub", lease=session.lease_id, role="hub", hub_eligible=True)
                await client.put(self.keys.member("hub"), member.encode(), lease=session.lease_id)
                campaign = HubCampaign(client, self.keys, cfg, session, _no_api, clock=self.now)
                await campaign.run(stop)
            except EtcdError:
                pass
            finally:
                await session.abandon()
                with contextlib.suppress(EtcdError):
                    await client.lease_revoke(session.lease_id, deadline=1.0)
            await asyncio.sleep(0.5)

    async def crash_hub(self) -> None:
        task, self.hub_task = self.hub_task, None
        await _kill(task, self.hub_sessions)

    # -- faults ----------------------------------------------------------------------------
    async def fault(self, kind: str, target: str, duration: float) -> None:
        e = self.etcd
        spoke = self.spokes.get(target)
        if kind == "etcd-freeze":
            e.freeze()
            await asyncio.sleep(duration)
            e.thaw()
        elif kind == "quorum-loss":
            e.lose_quorum(late_writes=self.rng.random() < 0.5)
            await asyncio.sleep(duration)
            e.restore_quorum()
        elif kind == "nospace":
            e.raise_nospace()
            await asyncio.sleep(duration)
            e.disarm_nospace()
        elif kind == "leader-change":
            e.leader_change(break_streams=self.rng.random() < 0.5)
        elif kind == "compaction":
            e.compact()
        elif kind in ("cut-blackhole", "cut-refuse"):
            e.partition(target, "blackhole" if kind == "cut-blackhole" else "refused")
            await asyncio.sleep(duration)
            e.heal(target)
        elif kind == "spoke-crash" and spoke is not None:
            await spoke.crash()
            await asyncio.sleep(min(duration, 30.0))
            spoke.restarts += 1
            spoke.start()
        elif kind == "session-revoke" and spoke is not None:
            failover = spoke.failover
            if failover is not None:
                client = e.client("revoker")
                with contextlib.suppress(EtcdError):
                    await client.lease_revoke(failover.session.lease_id, deadline=2.0)
                await client.close()
        elif kind == "hub-crash":
            await self.crash_hub()
            await asyncio.sleep(min(duration, 20.0))
            self.start_hub()
        self.last_heal = max(self.last_heal, self.now())

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> list[Violation]:
        self.started = self.now()
        self.etcd = SimEtcd(seed=self.seed)
        admin = self.etcd.client("admin")
        await create_scope(admin, self.keys, scope_doc())
        self.start_hub()
        for i in range(1, self.plan.spokes + 1):
            offset = self.rng.uniform(-0.5, 0.5)
            s = SimSpoke(self, f"s{i}", IPv4Address(f"10.9.0.{i + 1}"), offset)
            self.spokes[s.name] = s
            s.start()
        for n in range(self.plan.clients):
            self.clients.append(SimClient(self, n, random.Random(self.rng.random())))
        self.probe = Probe(self, random.Random(self.rng.random()))
        visitors = self._visitors()
        async with asyncio.TaskGroup() as tg:
            client_tasks = [tg.create_task(c.run(), name=f"client-{c.n}") for c in self.clients]
            client_tasks.append(tg.create_task(self.probe.run(), name="probe"))
            client_tasks += [tg.create_task(v.run(), name=f"visitor-{v.n}") for v in visitors]
            client_tasks.append(tg.create_task(self._watch_normal(), name="monitor"))
            fault_tasks = []
            for at, duration, kind, target in self.plan.faults:
                fault_tasks.append(tg.create_task(self._at(at, kind, target, duration)))
            await asyncio.sleep(self.plan.horizon)
            for t in fault_tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            self.last_heal = max(self.last_heal, self.now())
            await asyncio.sleep(self.plan.settle)
            self.check_end()
            for t in client_tasks:
                t.cancel()
        for s in self.spokes.values():
            await s.crash()
        await self.crash_hub()
        return self.violations

    def _visitors(self) -> list[Visitor]:
        """The crowds' clients, each arriving at a seeded moment of its crowd's spread."""
        out = []
        for k, (at, size, spread) in enumerate(self.plan.crowds):
            for i in range(size):
                rng = random.Random(self.rng.random())
                when = self.started + at + rng.uniform(0.0, spread)
                mac = bytes([2, 0, 2, k & 0xFF, i >> 8 & 0xFF, i & 0xFF])
                out.append(Visitor(self, 200_000 + 1000 * k + i, mac, rng, when))
        return out

    async def _at(self, at: float, kind: str, target: str, duration: float) -> None:
        await asyncio.sleep(at)
        began = self.now()
        await self.fault(kind, target, duration)
        self.windows.append((kind, began, self.now()))

    async def _watch_normal(self) -> None:
        """NORMAL means every journaled write reached etcd: a NORMAL spoke with journal lines,
        bindings granted from the journal or unknown commits broke RECOVER's promise."""
        reported: set[str] = set()
        while True:
            await asyncio.sleep(0.5)
            for s in self.spokes.values():
                f = s.failover
                if s.name in reported or not s.serving or f is None:
                    continue
                if f.state is State.NORMAL and (
                    not f.journal.is_empty() or f.table.journaled(SCOPE) or f.table.unknown_count()
                ):
                    reported.add(s.name)
                    self.violate(
                        "unreplayed",
                        f"{s.name} is NORMAL with journal lines, journaled bindings "
                        f"({f.table.journaled(SCOPE)}) or unknown commits "
                        f"({f.table.unknown_count()}) etcd has not seen",
                    )

    def check_service(self) -> None:
        """A frozen etcd is detected like a dead one: new clients are served from the journal
        from `interrupted_after` (+ 2 s) into the freeze until new allocations stop."""
        probe = self.probe
        if probe is None:
            return
        for kind, began, healed in self.windows:
            if kind != "etcd-freeze":
                continue
            first = began + FAILOVER.interrupted_after + 2.0
            last = min(healed, began + FAILOVER.max_interrupted - 1.0)
            if last - first < 2.0 or self._overlaps_other_fault(kind, began, healed):
                continue
            if not any(first <= t <= last for t in probe.successes):
                self.violate(
                    "stalled",
                    f"etcd frozen {began - self.started:.1f}-{healed - self.started:.1f}: "
                    f"no new client served between {first - self.started:.1f} "
                    f"and {last - self.started:.1f}",
                )

    def _overlaps_other_fault(self, kind: str, began: float, healed: float) -> bool:
        """Another fault (or an earlier one of the same kind) during this one: the bound
        assumes the spokes were NORMAL when it began."""
        return any(
            (k, b, h) != (kind, began, healed)
            and k not in ("leader-change", "compaction")
            and b < healed
            and h > began - 30.0  # recovering from an earlier fault
            for k, b, h in self.windows
        )

    def check_end(self) -> None:
        now = self.now()
        self.check_service()
        for s in self.spokes.values():
            if not s.serving or s.state is not State.NORMAL:
                self.violate("not-normal", f"{s.name} is {s.state} at the end")
                continue
            f = s.failover
            member = self.etcd.get(self.keys.member(s.name))
            if f is not None and (member is None or member.lease != f.session.lease_id):
                self.violate(
                    "unregistered", f"{s.name} is NORMAL but not a member with its session"
                )
            if f is not None and (
                not f.journal.is_empty() or f.table.journaled(SCOPE) or f.table.unknown_count()
            ):
                # NORMAL means every journaled write reached etcd (RECOVER replayed it all)
                self.violate(
                    "unreplayed",
                    f"{s.name} is NORMAL with journal lines, journaled bindings "
                    f"({f.table.journaled(SCOPE)}) or unknown commits ({f.table.unknown_count()}) "
                    "not in etcd",
                )
            f = s.failover
            if f is not None and f.duplicates:
                self.violate("alarm", f"{s.name} raised {f.duplicates} duplicate alarm(s)")
        for c in self.clients:
            h = c.held
            if h is None or h.end <= now + 1.0:
                continue
            v = self.etcd.get(self.keys.lease(SCOPE, h.ip))
            if v is None:
                self.violate("lost", f"client {c.n}'s lease on {h.ip} is not in etcd")
                continue
            b = decode_binding(v.value)
            if b.client_key != c.key:
                self.violate("lost", f"client {c.n}'s lease on {h.ip}: etcd names another client")
            elif b.expires < h.end - 2.0:  # clocks differ by up to 1 s, delivery by ms
                self.violate(
                    "lost",
                    f"client {c.n}'s lease on {h.ip} runs to {h.end:.1f}, "
                    f"etcd says {b.expires:.1f}",
                )


def _tmpfs() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


def run_seed(
    seed: int, plan: Plan | None = None, horizon: float = 200.0
) -> tuple[World, list[Violation]]:
    """Run one seed on a fresh virtual loop; the world (for its report) and what broke."""
    from tests.sim.loop import run

    world = World(seed, plan, horizon)
    try:
        violations = run(
            world.run(), start=1_000_000.0, limit=world.plan.horizon + 600.0, turn=LOOP_TURN
        )
    finally:
        shutil.rmtree(world.workdir, ignore_errors=True)
    return world, violations


def summary(world: World) -> dict[str, Any]:
    """What a run did, for a reader of a failing seed (and to see that faults bit)."""
    return {
        "seed": world.seed,
        "plan": world.plan,
        "acks": world.acks,
        "new_clients_served": sum(len(c.waits) for c in world.clients),
        "worst_wait": round(max((w for c in world.clients for w in c.waits), default=0.0), 1),
        "states": {k: sorted(set(v)) for k, v in world.transitions.items()},
        "restarts": {s.name: s.restarts for s in world.spokes.values()},
        # every write etcd applied, in order: equal digests mean the same run
        "trace": hashlib.sha256("\n".join(map(str, world.etcd.trace)).encode()).hexdigest()[:16],
    }
