"""Lease times and the options of a reply. Pure; no I/O.

Option policy (RFC 2132 says send what the client asks for): a reply carries the message type,
the server identifier and, for OFFER/ACK of a lease, lease time, T1 and T2 (RFC 2131 4.3.1,
table 3). Then, in this order: every option in the client's parameter request list that the
scope configures (the subnet mask comes from the scope's subnet unless configured), then the
"always" options the client did not ask for: subnet mask (1), router (3), DNS servers (6) and
domain name (15) when configured, as common servers do, because some clients omit option 55.
Client identifier (61) is echoed (RFC 6842) and relay agent information (82) is echoed
unchanged, last (RFC 3046 2.2). A NAK carries only type, server id, message (56), 61 and 82.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hubspoke.model import Scope
from spoke.dhcp.message import BROADCAST_FLAG, ZERO, Message, MessageType, Op, Opt

ALWAYS = (Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS_SERVERS, Opt.DOMAIN_NAME)
_RESERVED = frozenset(
    {
        Opt.PAD,
        Opt.END,
        Opt.REQUESTED_ADDRESS,
        Opt.LEASE_TIME,
        Opt.OVERLOAD,
        Opt.MESSAGE_TYPE,
        Opt.SERVER_ID,
        Opt.PARAMETER_REQUEST_LIST,
        Opt.MESSAGE,
        Opt.MAX_MESSAGE_SIZE,
        Opt.RENEWAL_TIME,
        Opt.REBINDING_TIME,
        Opt.CLIENT_ID,
        Opt.RELAY_AGENT_INFO,
    }
)


def lease_time(scope: Scope, requested: int | None) -> int:
    """The scope's lease time, or the client's request (option 51) clamped to the scope's
    [min_lease_time, max_lease_time]."""
    if requested is None:
        return scope.lease_time
    return max(scope.min_lease_time, min(requested, scope.max_lease_time))


def timers(scope: Scope, lease: int) -> tuple[int, int]:
    """(T1, T2) for `lease`, with T1 < T2 < lease whenever lease >= 3."""
    t2 = scope.rebinding_time(lease)
    t1 = min(scope.renewal_time(lease), max(t2 - 1, 0))
    return t1, t2


def _u32(v: int) -> bytes:
    return max(0, min(v, 0xFFFFFFFF)).to_bytes(4, "big")


def scope_options(scope: Scope, prl: tuple[int, ...]) -> dict[int, bytes]:
    """The configured options to answer, in reply order (see the module docstring)."""
    available: dict[int, bytes] = {Opt.SUBNET_MASK: scope.subnet.netmask.packed}
    available.update({c: v for c, v in scope.options.items() if c not in _RESERVED})
    out: dict[int, bytes] = {}
    for code in (*prl, *ALWAYS):
        if code in available and code not in out:
            out[code] = available[code]
    return out


def build_reply(
    request: Message,
    mtype: MessageType,
    server_id: IPv4Address,
    *,
    scope: Scope | None,
    yiaddr: IPv4Address = ZERO,
    ciaddr: IPv4Address = ZERO,
    lease: int | None = None,
    message: str | None = None,
) -> Message:
    """A BOOTREPLY answering `request`: same xid, flags, giaddr, chaddr, htype, hlen. A NAK
    through a relay (giaddr set) carries the broadcast flag, so the relay broadcasts it (RFC 2131
    4.3.2: the client may have no usable address and may not answer ARP)."""
    opts: dict[int, bytes] = {
        Opt.MESSAGE_TYPE: bytes([mtype]),
        Opt.SERVER_ID: server_id.packed,
    }
    if lease is not None and scope is not None:
        t1, t2 = timers(scope, lease)
        opts[Opt.LEASE_TIME] = _u32(lease)
        opts[Opt.RENEWAL_TIME] = _u32(t1)
        opts[Opt.REBINDING_TIME] = _u32(t2)
    if message is not None:
        opts[Opt.MESSAGE] = message.encode("ascii", errors="replace")
    if scope is not None and mtype is not MessageType.NAK:
        opts.update(scope_options(scope, request.parameter_request_list))
    cid = request.options.get(Opt.CLIENT_ID)
    if cid:
        opts[Opt.CLIENT_ID] = cid
    rai = request.relay_agent_info
    if rai is not None:
        opts[Opt.RELAY_AGENT_INFO] = rai
    return Message(
        op=Op.BOOTREPLY,
        xid=request.xid,
        chaddr=request.chaddr,
        htype=request.htype,
        hlen=request.hlen,
        flags=request.flags | BROADCAST_FLAG
        if mtype is MessageType.NAK and request.giaddr != ZERO
        else request.flags,
        ciaddr=ciaddr,
        yiaddr=yiaddr,
        giaddr=request.giaddr,
        options=opts,
    )
