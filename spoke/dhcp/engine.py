"""The sans-I/O DHCP server core (RFC 2131 4.3): pure; no sockets, no clock reads, no awaits.

`Engine.handle(message, ingress, now)` returns a `Decision` (see `spoke.dhcp.decisions`). Offers
live in memory (the binding table); a lease is only ever ACKed after its binding committed, so
every ACK that creates or extends a lease is a `Commit`. Choices where the RFC leaves room:

- DISCOVER picks, in order: the client's reservation, the address already offered to it, its
  most recent binding (any state but DECLINED, if not given away), its requested address (50),
  then a free address (never used first, then the one freed longest ago).
- REQUEST in SELECTING naming us: NAK when we hold a live offer for another address; otherwise
  the requested address is granted if it is the client's, offered to it, or still free (a slow
  client whose offer lapsed is not punished).
- RENEWING and REBINDING for an address we hold no binding for: silence in both cases. A NAK
  could cancel a lease our replica has not seen yet; silence lets the client fall back.
- An early renewal (elapsed < `early_renew_fraction` of the lease) is ACKed with the time left
  and no write.
- `policy` (a `ServingPolicy` passed with each request, from the failover state): `lease_cap` caps
  every lease offered or granted (MCLT while etcd is unreachable); `allocate_new=False` refuses
  any grant that needs a block fence (a new allocation) while renewals of known bindings go on.
  While etcd is unreachable a grant also never runs past the policy's end bound (the etcd-recorded
  expiry plus MCLT, or `journal_until` in our own blocks); a renewal that cannot be extended at
  all is not answered (`lease-bound`), so the client rebinds with a server that has etcd.
- The expiry written for a client never moves back during its tenure of an address (a shorter
  renewal, a RELEASE or a DECLINE keep the later end): other spokes reuse an address only after
  that expiry plus MCLT, which must cover every renewal an interrupted spoke granted from an
  older view.
- An address whose commit has an unknown outcome is held for that commit's client only
  (`BindingTable.hold_unknown`).
- `conflicted` (scope, address, client key): clients whose binding lost a conflict during
  RECOVER; their next RENEWING, REBINDING or INIT-REBOOT request for that address is NAKed.

Hostile input (issue 12), refused by `screen` before any lookup: a client identifier (61) shorter
than 2 or longer than 255 bytes (RFC 2132 9.14) is `bad-client-id`; `hlen` 0 with no client
identifier (every such client would share one identity; RFC 4390's clients with no hardware
address send option 61, as RFC 2131 4.2 allows) is `no-client-identity`. A reply that cannot be
encoded in 576 bytes (RFC 6842 and RFC 3046 make the server echo options 61 and 82 unaltered, so
a large client identifier and a large option 82 together may not fit, and neither RFC allows
leaving them out) is `reply-too-large`, decided before an offer holds an address or a commit
writes one.

Who answers what in a cluster (docs/cluster.md), when the engine is given `is_mine`: a request
every server hears (DISCOVER, INIT-REBOOT, REBINDING, a broadcast INFORM, a DECLINE or RELEASE
naming no server) is answered only if the client is in one of our buckets; SELECTING only by
the server it names (as in standalone mode); a unicast RENEWING or INFORM always. A relayed
request (giaddr set) counts as broadcast: relay agents forward to every server they know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from hubspoke.model import Binding, BindingState, Block, Scope, Versioned
from spoke.dhcp.codec import fits
from spoke.dhcp.decisions import (
    BindingWrite,
    Commit,
    CommitKind,
    Decision,
    Drop,
    Ingress,
    Reply,
    ServingPolicy,
    needs_bucket,
)
from spoke.dhcp.message import MAX_CLIENT_ID, MIN_CLIENT_ID, ZERO, Message, MessageType, Op, Opt
from spoke.dhcp.optionset import build_reply, lease_time
from spoke.dhcp.reply import Outgoing, destination
from spoke.dhcp.scopes import ScopeIndex, in_pools, reservation_matches
from spoke.leases.table import BindingTable, Entry

__all__ = ["Engine", "EngineConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """`server_ids`: our addresses accepted as a server identifier besides the ingress one."""

    node: str
    offer_lifetime: float = 30.0
    decline_probation: float = 600.0
    early_renew_fraction: float = 0.25
    server_ids: frozenset[IPv4Address] = frozenset()

    def __post_init__(self) -> None:
        if not self.node:
            raise ValueError("node must be named")
        if self.offer_lifetime <= 0 or self.decline_probation < 0:
            raise ValueError("offer_lifetime must be > 0 and decline_probation >= 0")
        if not 0 <= self.early_renew_fraction < 1:
            raise ValueError("early_renew_fraction must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class _Req:
    msg: Message
    ingress: Ingress
    now: float
    scope: Scope
    key: bytes
    policy: ServingPolicy


@dataclass(frozen=True, slots=True)
class _Grant:
    """An address this client may be given now, and what its commit compares."""

    ip: IPv4Address
    entry: Entry | None
    fence: tuple[Block, int] | None


NOT_A_REQUEST = Drop("not-a-request")
BAD_REQUEST = Drop("bad-request")
NOT_MY_BUCKET = Drop("not-my-bucket")
OTHER_SERVER_SELECTED = Drop("other-server-selected")
LEASE_BOUND = Drop("lease-bound")
BAD_CLIENT_ID = Drop("bad-client-id")
NO_CLIENT_IDENTITY = Drop("no-client-identity")
REPLY_TOO_LARGE = Drop("reply-too-large")
NORMAL = ServingPolicy()  # etcd is written: the scope's own limits


def _tenure_end(entry: Entry | None, client_key: bytes, end: float) -> float:
    """The expiry to write: `end`, or later when the client already held the address longer
    (a client's recorded expiry never moves back while it holds the address)."""
    if entry is not None and entry[0].client_key == client_key:
        return max(end, entry[0].expires)
    return end


def _capped(policy: ServingPolicy, left: int) -> int:
    cap = policy.lease_cap
    return left if cap is None else min(left, cap)


def _quarantine_key(ip: IPv4Address) -> bytes:
    """An offer holder no client key can equal (client keys start with 0x00 or 0x01)."""
    return b"\xff" + ip.packed


class Engine:
    """`is_mine(msg)`: is the client in one of our hash buckets? None answers every client
    (standalone mode: one spoke owns every bucket)."""

    def __init__(
        self,
        config: EngineConfig,
        scopes: Sequence[Scope],
        table: BindingTable,
        *,
        is_mine: Callable[[Message], bool] | None = None,
        conflicted: set[tuple[str, IPv4Address, bytes]] | None = None,
    ) -> None:
        self.config = config
        self.table = table
        self._is_mine = is_mine
        self.conflicted: set[tuple[str, IPv4Address, bytes]] = (
            conflicted if conflicted is not None else set()
        )
        self._index = ScopeIndex(())
        self.set_scopes(scopes)
        self._handlers: dict[MessageType, Callable[[_Req], Decision]] = {
            MessageType.DISCOVER: self._discover,
            MessageType.REQUEST: self._request,
            MessageType.DECLINE: self._decline,
            MessageType.RELEASE: self._release,
            MessageType.INFORM: self._inform,
        }

    def set_scopes(self, scopes: Sequence[Scope]) -> None:
        """Replace the scope configuration (at start or when etcd says it changed)."""
        index = ScopeIndex(scopes)
        for old in self._index.scopes:
            if index.get(old.name) is None:
                self.table.set_reserved(old.name, ())
        for s in index.scopes:
            self.table.set_reserved(s.name, (r.ip for r in s.reservations))
        self._index = index

    @property
    def scopes(self) -> tuple[Scope, ...]:
        return self._index.scopes

    # -- entry points --------------------------------------------------------------------
    def handle(
        self, msg: Message, ingress: Ingress, now: float, policy: ServingPolicy = NORMAL
    ) -> Decision:
        """`screen`, then `serve` what it let through."""
        return self.screen(msg, ingress) or self.serve(msg, ingress, now, policy)

    def screen(self, msg: Message, ingress: Ingress) -> Drop | None:
        """What can be dropped from the request alone, before any lookup: not a request, an
        unknown message type, or (in a cluster) another server's request: a client outside our
        buckets, or a SELECTING REQUEST naming another server when we hold no offer for the
        client (with an offer, `serve` releases it). None: `serve` decides.

        The runtime calls this first, so the other servers' share of what relays and
        broadcasts deliver costs no transaction span and no scope lookup.
        """
        if msg.op is not Op.BOOTREQUEST:
            return NOT_A_REQUEST
        mtype = msg.message_type
        if mtype is None or mtype not in self._handlers:
            return BAD_REQUEST
        cid = msg.options.get(Opt.CLIENT_ID)
        if cid is not None and not MIN_CLIENT_ID <= len(cid) <= MAX_CLIENT_ID:
            return BAD_CLIENT_ID
        if msg.hlen == 0 and not cid:
            return NO_CLIENT_IDENTITY
        is_mine = self._is_mine
        if is_mine is None:
            return None
        if needs_bucket(msg, ingress):
            return None if is_mine(msg) else NOT_MY_BUCKET
        if mtype is MessageType.REQUEST:
            sid = msg.server_id
            if (
                sid is not None
                and not self._ours(sid, ingress)
                and not self.table.holds_offer_for(msg.client_key)
            ):
                return OTHER_SERVER_SELECTED
        return None

    def serve(
        self, msg: Message, ingress: Ingress, now: float, policy: ServingPolicy = NORMAL
    ) -> Decision:
        """Decide on a request `screen` let through, under `policy`."""
        mtype = msg.message_type
        assert mtype is not None, "serve() takes what screen() let through"
        handler = self._handlers[mtype]
        self.table.expire_offers(now)
        scope = self._index.select(
            msg, ingress.interface, ingress.server_ip, unicast=not ingress.broadcast
        )
        if scope is None:
            return Drop("no-scope")
        return handler(_Req(msg, ingress, now, scope, msg.client_key, policy))

    def committed(
        self, commit: Commit, version: Versioned, now: float, *, journaled: bool = False
    ) -> None:
        """The runtime committed `commit.write` at `version` (to etcd, or `journaled` while etcd
        cannot be written): update the table, drop holds."""
        w = commit.write
        if journaled:
            self.table.apply_local(w.scope, w.ip, w.binding, version)
        else:
            self.table.apply(w.scope, w.ip, w.binding, version)
        self._release_hold(commit)

    def commit_failed(
        self,
        commit: Commit,
        now: float,
        refreshed: tuple[Binding, Versioned] | None,
        policy: ServingPolicy = NORMAL,
    ) -> Decision:
        """A compare failed (someone acted first); the table is already refreshed from etcd."""
        self._release_hold(commit)
        if commit.kind is not CommitKind.ACK:
            return Drop("conflict")
        msg, w = commit.request, commit.write
        scope = self._index.get(w.scope)
        if (
            refreshed is not None
            and scope is not None
            and refreshed[0].ip == w.ip
            and refreshed[0].client_key == msg.client_key
            and refreshed[0].is_active(now)
            and int(refreshed[0].expires - now) > 0
        ):
            lease = _capped(policy, int(refreshed[0].expires - now))
            return self._ack(commit.request, commit.ingress, scope, w.ip, lease, "ack-refreshed")
        return self._nak(msg, commit.ingress, "binding changed, restart")

    def _release_hold(self, commit: Commit) -> None:
        w = commit.write
        if commit.kind is CommitKind.ACK:
            offer = self.table.offered(w.scope, w.ip, float("-inf"))
            if offer is not None and offer.client_key == w.binding.client_key:
                self.table.forget_offer(w.scope, w.binding.client_key)
        elif commit.kind is CommitKind.DECLINE:
            self.table.forget_offer(w.scope, _quarantine_key(w.ip))

    # -- helpers -------------------------------------------------------------------------
    def _ours(self, sid: IPv4Address, ingress: Ingress) -> bool:
        return sid == ingress.server_ip or sid in self.config.server_ids

    def _lease(self, r: _Req) -> int:
        lease = lease_time(r.scope, r.msg.lease_time)
        cap = r.policy.lease_cap
        return lease if cap is None else min(lease, cap)

    def _end_bound(self, r: _Req, ip: IPv4Address) -> float | None:
        """The latest a lease of `ip` for this client may end while etcd cannot be written
        (None: etcd is being written, no bound beyond the scope's)."""
        cap = r.policy.lease_cap
        if cap is None:
            return None
        t, name = self.table, r.scope.name
        bound = float("-inf")
        recorded = t.etcd_entry(name, ip)
        if recorded is not None and recorded[0].client_key == r.key:
            bound = recorded[0].expires + cap
        until = r.policy.journal_until
        if until is not None and t.owned_block(name, ip) is not None:
            bound = max(bound, until)
        return bound

    def _bounded(self, r: _Req, ip: IPv4Address, lease: int) -> int:
        """`lease` shortened to the end bound; 0 when nothing may be granted."""
        bound = self._end_bound(r, ip)
        if bound is None:
            return lease
        if bound <= r.now:
            return 0
        return min(lease, int(bound - r.now))

    def _out(self, request: Message, reply: Message, ingress: Ingress) -> Outgoing:
        return Outgoing(reply, destination(request, reply), ingress.interface)

    def _nak(self, msg: Message, ingress: Ingress, text: str) -> Reply:
        reply = build_reply(msg, MessageType.NAK, ingress.server_ip, scope=None, message=text)
        return Reply(self._out(msg, reply, ingress), "nak")

    def _ack(
        self,
        msg: Message,
        ingress: Ingress,
        scope: Scope,
        ip: IPv4Address,
        lease: int,
        outcome: str,
    ) -> Reply:
        reply = build_reply(
            msg,
            MessageType.ACK,
            ingress.server_ip,
            scope=scope,
            yiaddr=ip,
            ciaddr=msg.ciaddr,
            lease=lease,
        )
        return Reply(self._out(msg, reply, ingress), outcome)

    def _grant(self, r: _Req, ip: IPv4Address | None) -> _Grant | None:
        """May `ip` go to this client now? With what the commit must compare.

        A grant that needs a block fence is a new allocation: refused unless the policy allows.
        """
        g = self._grant_any(r, ip)
        if g is not None and g.fence is not None and not r.policy.allocate_new:
            return None
        return g

    def _grant_any(self, r: _Req, ip: IPv4Address | None) -> _Grant | None:
        if ip is None or ip not in r.scope.subnet:
            return None
        t, name = self.table, r.scope.name
        holder = t.unknown_holder(name, ip)
        if holder is not None and holder != r.key:
            return None  # a commit for another client may yet have bound it
        entry = t.get(name, ip)
        offer = t.offered(name, ip, r.now)
        if offer is not None and offer.client_key != r.key:
            return None
        own = entry is not None and entry[0].client_key == r.key
        if own and entry is not None and entry[0].is_active(r.now):
            return _Grant(ip, entry, None)
        reservation = self._index.reservation_at(r.scope, ip)
        if reservation is not None:
            if not reservation_matches(reservation, r.msg):
                return None
            if entry is not None and not own and t.reusable_at(entry[0]) > r.now:
                return None
            return _Grant(ip, entry, t.owned_block(name, ip))
        if not in_pools(r.scope, ip):
            return None
        if own and entry is not None and entry[0].state is not BindingState.DECLINED:
            fence = t.owned_block(name, ip)
            return _Grant(ip, entry, fence) if fence is not None else None
        if not t.is_free(name, ip, r.now, r.key):
            return None
        return _Grant(ip, entry, t.owned_block(name, ip))

    def _commit_ack(self, r: _Req, g: _Grant) -> Decision:
        lease = self._bounded(r, g.ip, self._lease(r))
        if lease < 1:
            return LEASE_BOUND
        binding = Binding(
            scope=r.scope.name,
            ip=g.ip,
            state=BindingState.BOUND,
            client_key=r.key,
            hw_address=r.msg.hardware_address,
            start=r.now,
            expires=_tenure_end(g.entry, r.key, r.now + lease),
            node=self.config.node,
            hostname=r.msg.hostname,
        )
        ack = self._ack(r.msg, r.ingress, r.scope, g.ip, lease, "ack")
        if not fits(ack.out.message):
            return REPLY_TOO_LARGE  # nothing written: a binding no ACK could announce
        expected = g.entry[1] if g.entry is not None else None
        write = BindingWrite(r.scope.name, g.ip, binding, expected, g.fence)
        # hold the address while the commit is in flight: no one else is offered it meanwhile
        self.table.hold_offer(r.scope.name, g.ip, r.key, r.now + self.config.offer_lifetime)
        return Commit(write, ack.out, CommitKind.ACK, r.msg, r.ingress)

    # -- DISCOVER ------------------------------------------------------------------------
    def _discover(self, r: _Req) -> Decision:
        t, name = self.table, r.scope.name
        reservation = self._index.reservation_for(r.scope, r.msg)
        offer = t.offer_for(name, r.key, r.now)
        latest = t.by_client(name, r.key)
        candidates = (
            reservation.ip if reservation is not None else None,
            offer.ip if offer is not None else None,
            latest[0].ip if latest is not None else None,
            r.msg.requested_address,
        )
        grant = next((g for ip in candidates if (g := self._grant(r, ip)) is not None), None)
        if grant is None:
            grant = self._grant(r, t.pick_free(name, r.now))
        if grant is None:
            return Drop("pool-exhausted" if r.policy.allocate_new else "no-new-allocations")
        lease = self._lease(r)
        reply = build_reply(
            r.msg,
            MessageType.OFFER,
            r.ingress.server_ip,
            scope=r.scope,
            yiaddr=grant.ip,
            lease=lease,
        )
        if not fits(reply):
            return REPLY_TOO_LARGE  # no address held for an offer that cannot be sent
        t.hold_offer(name, grant.ip, r.key, r.now + self.config.offer_lifetime)
        return Reply(self._out(r.msg, reply, r.ingress), "offer", r.scope.name)

    # -- REQUEST -------------------------------------------------------------------------
    def _request(self, r: _Req) -> Decision:
        sid = r.msg.server_id
        if sid is not None:
            return self._selecting(r, sid)
        ip = r.msg.requested_address if r.msg.ciaddr == ZERO else r.msg.ciaddr
        if ip is not None and (r.scope.name, ip, r.key) in self.conflicted:
            self.conflicted.discard((r.scope.name, ip, r.key))
            return self._nak(r.msg, r.ingress, "binding lost a conflict, restart")
        if r.msg.ciaddr == ZERO:
            return self._init_reboot(r)
        return self._renewing(r)

    def _selecting(self, r: _Req, sid: IPv4Address) -> Decision:
        if not self._ours(sid, r.ingress):
            self.table.forget_offer(r.scope.name, r.key)
            return OTHER_SERVER_SELECTED
        ip = r.msg.requested_address or (r.msg.ciaddr if r.msg.ciaddr != ZERO else None)
        if ip is None:
            return BAD_REQUEST
        offer = self.table.offer_for(r.scope.name, r.key, r.now)
        if offer is not None and offer.ip != ip:
            return self._nak(r.msg, r.ingress, "requested address was not offered")
        grant = self._grant(r, ip)
        if grant is None:
            return self._nak(r.msg, r.ingress, "requested address not available")
        return self._commit_ack(r, grant)

    def _init_reboot(self, r: _Req) -> Decision:
        ip = r.msg.requested_address
        if ip is None:
            return BAD_REQUEST
        if ip not in r.scope.subnet:
            return self._nak(r.msg, r.ingress, "wrong network")
        if self._index.reserved_for_other(r.scope, ip, r.msg):
            return self._nak(r.msg, r.ingress, "address reserved for another client")
        entry = self.table.get(r.scope.name, ip)
        other = entry is not None and entry[0].client_key != r.key
        if other and entry is not None and self.table.reusable_at(entry[0]) > r.now:
            return self._nak(r.msg, r.ingress, "address in use")
        reservation = self._index.reservation_for(r.scope, r.msg)
        own = entry is not None and entry[0].client_key == r.key
        if own or (reservation is not None and reservation.ip == ip):
            grant = self._grant(r, ip)
            if grant is None:
                return self._nak(r.msg, r.ingress, "lease no longer valid")
            return self._commit_ack(r, grant)
        if reservation is not None or self.table.by_client(r.scope.name, r.key) is not None:
            return self._nak(r.msg, r.ingress, "not your address")
        return Drop("unknown-client")

    def _renewing(self, r: _Req) -> Decision:
        ip = r.msg.ciaddr
        if ip not in r.scope.subnet:
            return self._nak(r.msg, r.ingress, "wrong network")
        if self._index.reserved_for_other(r.scope, ip, r.msg):
            return self._nak(r.msg, r.ingress, "address reserved for another client")
        entry = self.table.get(r.scope.name, ip)
        if entry is None:
            return Drop("unknown-client")
        b = entry[0]
        if b.client_key != r.key:
            if self.table.reusable_at(b) <= r.now:
                return Drop("unknown-client")
            return self._nak(r.msg, r.ingress, "address in use")
        if b.is_active(r.now):
            length = b.expires - b.start
            left = int(b.expires - r.now)
            if r.now - b.start < self.config.early_renew_fraction * length and left > 0:
                left = self._bounded(r, ip, _capped(r.policy, left))
                if left < 1:
                    return LEASE_BOUND
                return self._ack(r.msg, r.ingress, r.scope, ip, left, "ack-early-renewal")
        grant = self._grant(r, ip)
        if grant is None:
            return self._nak(r.msg, r.ingress, "lease no longer valid")
        return self._commit_ack(r, grant)

    # -- DECLINE, RELEASE, INFORM --------------------------------------------------------
    def _decline(self, r: _Req) -> Decision:
        sid = r.msg.server_id
        if sid is not None and not self._ours(sid, r.ingress):
            return Drop("not-for-us")
        ip = r.msg.requested_address
        if ip is None:
            return BAD_REQUEST
        t, name = self.table, r.scope.name
        entry = t.get(name, ip)
        offer = t.offered(name, ip, r.now)
        offered = offer is not None and offer.client_key == r.key
        own = entry is not None and entry[0].client_key == r.key
        if not (offered or own):
            return Drop("unknown-client")
        active = own and entry is not None and entry[0].is_active(r.now)
        binding = Binding(
            scope=name,
            ip=ip,
            state=BindingState.DECLINED,
            client_key=r.key,
            hw_address=r.msg.hardware_address,
            start=r.now,
            expires=_tenure_end(entry, r.key, r.now + self.config.decline_probation),
            node=self.config.node,
        )
        fence = None if active else t.owned_block(name, ip)
        write = BindingWrite(name, ip, binding, entry[1] if entry is not None else None, fence)
        t.forget_offer(name, r.key)
        t.hold_offer(name, ip, _quarantine_key(ip), r.now + self.config.offer_lifetime)
        return Commit(write, None, CommitKind.DECLINE, r.msg, r.ingress)

    def _release(self, r: _Req) -> Decision:
        sid = r.msg.server_id
        if sid is not None and not self._ours(sid, r.ingress):
            return Drop("not-for-us")
        entry = self.table.get(r.scope.name, r.msg.ciaddr)
        if entry is None or entry[0].client_key != r.key:
            return Drop("unknown-client")
        b, version = entry
        if b.state is not BindingState.BOUND:
            return Drop("not-bound")
        # `expires` stays the end of the lease: an interrupted spoke may have renewed it from an
        # older view, so others reuse the address only after it (plus MCLT) anyway.
        released = replace(b, state=BindingState.RELEASED, node=self.config.node)
        write = BindingWrite(r.scope.name, b.ip, released, version, None)
        return Commit(write, None, CommitKind.RELEASE, r.msg, r.ingress)

    def _inform(self, r: _Req) -> Decision:
        reply = build_reply(
            r.msg, MessageType.ACK, r.ingress.server_ip, scope=r.scope, ciaddr=r.msg.ciaddr
        )
        return Reply(self._out(r.msg, reply, r.ingress), "inform")
