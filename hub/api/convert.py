"""Translation between hubspoke.v1 protobuf messages and `hub.api.model`'s dataclasses.

Owns the parsing of request arguments (IP, MAC, client identifier, names, page sizes, scope
documents): a bad argument raises `InvalidArgument` whose message starts with the field name.
Pure; no I/O.
"""

from __future__ import annotations

import json
import re
from ipaddress import AddressValueError, IPv4Address
from typing import Any

from hub.api.model import (
    NO_REPORT,
    BlockOwnership,
    ClusterState,
    InvalidArgument,
    LeaseInfo,
    ReportAck,
    ScopeUtilization,
    SpokeState,
    UtilizationReport,
)
from hubspoke.api.hubspoke.v1 import management_pb2 as mpb
from hubspoke.api.hubspoke.v1 import report_pb2 as rpb

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_NAME = 253
_HEX_SEPARATORS = re.compile(r"[:\-.]")


def require_name(value: str, field: str) -> str:
    """A non-empty name of printable characters without spaces."""
    if not value:
        raise InvalidArgument(f"{field}: required")
    if len(value) > MAX_NAME or not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidArgument(f"{field}: not a valid name: {value!r}")
    return value


def parse_ip(value: str, field: str = "ip") -> IPv4Address:
    try:
        return IPv4Address(value)
    except (AddressValueError, ValueError):
        raise InvalidArgument(f"{field}: not an IPv4 address: {value!r}") from None


def parse_hex(value: str, field: str, *, max_len: int) -> bytes:
    """Hex octets, optionally separated by ':', '-' or '.' ("01:02:aa", "0102aa")."""
    text = value.strip()
    parts = _HEX_SEPARATORS.split(text) if _HEX_SEPARATORS.search(text) else None
    try:
        if parts is not None:
            if any(len(p) not in (1, 2) for p in parts):
                raise ValueError
            raw = bytes(int(p, 16) for p in parts)
        else:
            raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidArgument(f"{field}: not hex octets: {value!r}") from None
    if not 1 <= len(raw) <= max_len:
        raise InvalidArgument(f"{field}: must hold 1 to {max_len} octets, not {len(raw)}")
    return raw


def parse_mac(value: str) -> bytes:
    return parse_hex(value, "mac", max_len=16)


def parse_client_id(value: str) -> bytes:
    return parse_hex(value, "client_id", max_len=255)


def page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if value > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size: at most {MAX_PAGE_SIZE}, not {value}")
    return value


def parse_scope_doc(text: str, field: str = "scope_json") -> dict[str, Any]:
    """A scope document: a JSON object with a string `name` (the view validates the rest)."""
    if not text.strip():
        raise InvalidArgument(f"{field}: required")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{field}: not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{field}: must be a JSON object, not {type(doc).__name__}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{field}.name: required (a string)")
    return doc


def scope_to_pb(doc: dict[str, Any]) -> mpb.Scope:
    return mpb.Scope(name=str(doc.get("name", "")), scope_json=json.dumps(doc, sort_keys=True))


def hex_colon(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def utilization_to_pb(u: ScopeUtilization) -> rpb.ScopeUtilization:
    return rpb.ScopeUtilization(
        scope=u.scope,
        bound=u.bound,
        free=u.free,
        offers_per_s=u.offers_per_s,
        acks_per_s=u.acks_per_s,
        capacity=u.capacity,
    )


def utilization_from_pb(m: rpb.ScopeUtilization) -> ScopeUtilization:
    return ScopeUtilization(
        scope=m.scope,
        bound=m.bound,
        free=m.free,
        offers_per_s=m.offers_per_s,
        acks_per_s=m.acks_per_s,
        capacity=m.capacity,
    )


def report_to_pb(r: UtilizationReport) -> rpb.UtilizationReport:
    return rpb.UtilizationReport(
        node=r.node,
        state=r.state,
        state_reason=r.state_reason,
        sent_at=r.sent_at,
        scopes=[utilization_to_pb(u) for u in r.scopes],
        seq=r.seq,
        cpu=r.cpu,
    )


def report_from_pb(m: rpb.UtilizationReport) -> UtilizationReport:
    """A report as received; `node` must be set, scope names non-empty."""
    require_name(m.node, "node")
    for i, u in enumerate(m.scopes):
        require_name(u.scope, f"scopes[{i}].scope")
    return UtilizationReport(
        node=m.node,
        state=m.state,
        state_reason=m.state_reason,
        sent_at=m.sent_at,
        scopes=tuple(utilization_from_pb(u) for u in m.scopes),
        seq=m.seq,
        cpu=m.cpu,
    )


def ack_to_pb(a: ReportAck) -> rpb.ReportAck:
    return rpb.ReportAck(epoch=a.epoch, hub_node=a.hub_node, seq=a.seq)


def ack_from_pb(m: rpb.ReportAck) -> ReportAck:
    return ReportAck(epoch=m.epoch, hub_node=m.hub_node, seq=m.seq)


def spoke_to_pb(s: SpokeState) -> mpb.SpokeState:
    return mpb.SpokeState(
        node=s.node,
        state=s.state,
        state_reason=s.state_reason,
        live=s.live,
        draining=s.draining,
        bucket_count=s.bucket_count,
        blocks=list(s.blocks),
        utilization=[utilization_to_pb(u) for u in s.utilization],
        report_age_s=NO_REPORT if s.report_age_s is None else s.report_age_s,
        grpc_address=s.grpc_address,
        cpu=NO_REPORT if s.cpu is None else s.cpu,
    )


def block_to_pb(b: BlockOwnership) -> mpb.BlockOwnership:
    m = mpb.BlockOwnership(scope=b.scope, block_id=b.block_id, owner=b.owner or "")
    if b.handover_to is not None:
        m.handover_to = b.handover_to
    return m


def cluster_to_pb(c: ClusterState) -> mpb.ClusterState:
    return mpb.ClusterState(
        hub_node=c.hub_node,
        epoch=c.epoch,
        hub_address=c.hub_address,
        spokes=[spoke_to_pb(s) for s in c.spokes],
        blocks=[block_to_pb(b) for b in c.blocks],
        buckets_total=c.buckets_total,
        buckets_unassigned=c.buckets_unassigned,
    )


def lease_to_pb(lease: LeaseInfo) -> mpb.Lease:
    return mpb.Lease(
        scope=lease.scope,
        ip=str(lease.ip),
        state=lease.state.value,
        client_id=lease.client_id.hex(),
        hw_address=hex_colon(lease.hw_address),
        hostname=lease.hostname or "",
        start=lease.start,
        expires=lease.expires,
        node=lease.node,
    )
