"""The data the hub's gRPC API speaks, free of protobuf: frozen dataclasses, errors, ClusterView.

`hub/api/service.py` translates protobuf messages to and from these types; the hub runtime
implements `ClusterView` and never imports generated code. Errors the view raises
(`InvalidArgument`, `NotFound`, `AlreadyExists`, `FailedPrecondition`, `Unavailable`) reach the
caller as the gRPC status of the same name, with the message. Pure; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Protocol

from hubspoke.model import Binding, BindingState

NO_REPORT = -1.0  # SpokeState.report_age_s on the wire when no report has arrived


class ApiError(Exception):
    """An error for the API's caller; subclasses pick the gRPC status code."""

    code_name = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ApiError):
    """The request is malformed or the document does not validate (INVALID_ARGUMENT)."""

    code_name = "INVALID_ARGUMENT"


class NotFound(ApiError):
    """The named scope, node or lease does not exist (NOT_FOUND)."""

    code_name = "NOT_FOUND"


class AlreadyExists(ApiError):
    """A scope of that name exists already (ALREADY_EXISTS)."""

    code_name = "ALREADY_EXISTS"


class FailedPrecondition(ApiError):
    """The cluster's state forbids the operation now, e.g. undrain of a node not drained."""

    code_name = "FAILED_PRECONDITION"


class Unavailable(ApiError):
    """This process is not (or no longer) the hub, or etcd cannot be reached (UNAVAILABLE).

    Clients given several hub addresses try the next one on this code.
    """

    code_name = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class ScopeUtilization:
    """What one spoke serves from one scope."""

    scope: str
    bound: int
    free: int
    offers_per_s: float = 0.0
    acks_per_s: float = 0.0
    capacity: int = 0  # addresses in the blocks `free` was counted over (0: unknown)


@dataclass(frozen=True, slots=True)
class UtilizationReport:
    """One report from a spoke; `sent_at` is the spoke's wall clock, `seq` counts per stream."""

    node: str
    state: str
    state_reason: str
    sent_at: float
    scopes: tuple[ScopeUtilization, ...] = ()
    seq: int = 0
    cpu: float = 0.0  # share of one core the spoke's process used since its last report


@dataclass(frozen=True, slots=True)
class ReportAck:
    """The hub's answer to one report."""

    epoch: int
    hub_node: str
    seq: int = 0


@dataclass(frozen=True, slots=True)
class BlockOwnership:
    """Who owns one block: `owner` None is the reserve; `handover_to` "" hands it to the reserve."""

    scope: str
    block_id: str
    owner: str | None
    handover_to: str | None = None


@dataclass(frozen=True, slots=True)
class SpokeState:
    """The hub's view of one spoke. `report_age_s` None: no report has arrived yet."""

    node: str
    state: str
    state_reason: str = ""
    live: bool = False
    draining: bool = False
    bucket_count: int = 0
    blocks: tuple[str, ...] = ()  # "<scope>/<block_id>"
    utilization: tuple[ScopeUtilization, ...] = ()
    report_age_s: float | None = None
    grpc_address: str = ""
    cpu: float | None = None  # share of one core its process used, from its last report


@dataclass(frozen=True, slots=True)
class ClusterState:
    """The whole cluster as the hub sees it."""

    hub_node: str
    epoch: int
    hub_address: str
    spokes: tuple[SpokeState, ...] = ()
    blocks: tuple[BlockOwnership, ...] = ()
    buckets_total: int = 256
    buckets_unassigned: int = 0


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """One binding as the lease API shows it."""

    scope: str
    ip: IPv4Address
    state: BindingState
    client_id: bytes
    hw_address: bytes
    start: float
    expires: float
    node: str
    hostname: str | None = None

    @classmethod
    def from_binding(cls, b: Binding, now: float) -> LeaseInfo:
        """`client_id` is the client's option 61 (empty when it sent none: the binding is then
        keyed by its hardware address; see `Message.client_key`). A bound lease whose expiry
        passed (wall clock `now`) is shown `expired`: etcd keeps the record until the address
        is given again, and no spoke renews it without a new request."""
        key = b.client_key
        state = b.state
        if state is BindingState.BOUND and b.expires <= now:
            state = BindingState.EXPIRED
        return cls(
            scope=b.scope,
            ip=b.ip,
            state=state,
            client_id=key[1:] if key[:1] == b"\x00" else b"",
            hw_address=b.hw_address,
            start=b.start,
            expires=b.expires,
            node=b.node,
            hostname=b.hostname,
        )


class ClusterView(Protocol):
    """What the servicers need from the hub runtime. Raise the ApiError subclasses above.

    Scope documents are plain dicts in the schema of deploy/spoke.example.yaml's `scopes`
    entries; the view validates them (hubspoke/scopes/parse.py) and raises InvalidArgument with the
    field path. The servicers only check the document is a JSON object with a string `name`.
    """

    def cluster_state(self) -> ClusterState: ...

    async def get_leases(
        self,
        *,
        ip: IPv4Address | None = None,
        mac: bytes | None = None,
        client_id: bytes | None = None,
    ) -> list[LeaseInfo]:
        """Bindings matching exactly one of the criteria (the servicer passes exactly one)."""
        ...

    async def list_leases(
        self, scope: str | None, page_size: int, page_token: str
    ) -> tuple[list[LeaseInfo], str]:
        """One page (1 <= page_size <= 1000) and the next page's token ("" at the end).

        `scope` None: every scope. A token the view did not issue raises InvalidArgument.
        """
        ...

    async def list_scopes(self) -> list[dict[str, Any]]: ...

    async def get_scope(self, name: str) -> dict[str, Any]: ...

    async def create_scope(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Store a new scope; return the document as stored."""
        ...

    async def update_scope(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Replace scope `name` (doc["name"] == name); return the document as stored."""
        ...

    async def delete_scope(self, name: str) -> None: ...

    async def drain(self, node: str) -> None: ...

    async def undrain(self, node: str) -> None: ...

    def on_report(self, report: UtilizationReport, peer: str) -> ReportAck:
        """Keep the latest report of `report.node`; answer with the hub's epoch."""
        ...

    def on_report_stream_closed(self, node: str, error: str | None) -> None:
        """The report stream of `node` ended: `error` None for a clean close, else why."""
        ...
