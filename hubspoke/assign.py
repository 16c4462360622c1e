"""Ownership records the hub writes and spokes follow: buckets, blocks, members. Pure; no I/O.

- `assign/buckets` holds one `BucketMap`: the owner of each of the 256 RFC 3074 hash buckets.
- `assign/blocks/<scope>/<block-id>` holds one `BlockRecord` per block: its owner (None: the
  hub's reserve) and, when the hub wants a live owner to give the block up, `handover_to`
  (a node, or "" for the reserve). The owner stops offering from the block and commits the
  hand-over itself (a compare on the record's mod_revision), so a live spoke is never raced.
- `members/<node>` holds one `Member`, attached to the node's session lease.

Every value is compact JSON with a `v` field, parsed at the edge: a value this version cannot
read raises `ValueFormatError` and is never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hubspoke.values import ValueFormatError

NUM_BUCKETS = 256
VERSION = 1


def _dump(d: dict[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":"), sort_keys=True).encode()


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        d = json.loads(raw)
    except ValueError as e:
        raise ValueFormatError(f"{what}: not JSON: {e}") from e
    if not isinstance(d, dict) or d.get("v") != VERSION:
        raise ValueFormatError(f"{what}: unsupported version")
    return d


@dataclass(frozen=True, slots=True)
class BucketMap:
    """Owner of every hash bucket (`owners[b]` is a node name, or None: nobody answers)."""

    owners: tuple[str | None, ...] = (None,) * NUM_BUCKETS

    def __post_init__(self) -> None:
        if len(self.owners) != NUM_BUCKETS:
            raise ValueError(f"a bucket map has {NUM_BUCKETS} owners, not {len(self.owners)}")

    def owner(self, bucket: int) -> str | None:
        return self.owners[bucket]

    def buckets_of(self, node: str) -> frozenset[int]:
        return frozenset(b for b, o in enumerate(self.owners) if o == node)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.owners:
            if o is not None:
                out[o] = out.get(o, 0) + 1
        return out

    def encode(self) -> bytes:
        names = sorted({o for o in self.owners if o is not None})
        index = {n: i for i, n in enumerate(names)}
        return _dump(
            {
                "v": VERSION,
                "nodes": names,
                "map": [-1 if o is None else index[o] for o in self.owners],
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> BucketMap:
        d = _load(raw, "bucket map")
        try:
            names = [str(n) for n in d["nodes"]]
            owners = tuple(None if i == -1 else names[int(i)] for i in d["map"])
            return cls(owners)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ValueFormatError(f"bucket map: {e}") from e


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """Who owns a block. `owner=None`: the hub's reserve.

    `handover_to` set (a node name, or "" for the reserve): the hub asked the owner to give the
    block up; the owner stops offering from it and writes the new record itself.
    """

    owner: str | None
    handover_to: str | None = None
    why: str = ""

    @property
    def is_reserve(self) -> bool:
        return self.owner is None

    def allocatable_by(self, node: str) -> bool:
        """May `node` allocate *new* addresses from this block now?"""
        return self.owner == node and self.handover_to is None

    def encode(self) -> bytes:
        d: dict[str, Any] = {"v": VERSION, "owner": self.owner}
        if self.handover_to is not None:
            d["handover_to"] = self.handover_to
        if self.why:
            d["why"] = self.why
        return _dump(d)

    @classmethod
    def decode(cls, raw: bytes) -> BlockRecord:
        d = _load(raw, "block record")
        owner = d.get("owner")
        handover = d.get("handover_to")
        if owner is not None and not isinstance(owner, str):
            raise ValueFormatError("block record: owner must be a string or null")
        if handover is not None and not isinstance(handover, str):
            raise ValueFormatError("block record: handover_to must be a string")
        return cls(owner=owner, handover_to=handover, why=str(d.get("why", "")))


@dataclass(frozen=True, slots=True)
class Member:
    """A live process, attached to its session lease (`members/<node>`)."""

    node: str
    lease: int
    role: str  # "spoke" or "hub"
    hub_eligible: bool = False
    grpc_address: str | None = None  # where this process serves gRPC (hub role, health)
    server_ids: tuple[str, ...] = ()
    started: float = 0.0
    draining: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _dump(
            {
                "v": VERSION,
                "node": self.node,
                "lease": self.lease,
                "role": self.role,
                "hub_eligible": self.hub_eligible,
                "grpc": self.grpc_address,
                "server_ids": list(self.server_ids),
                "started": round(self.started, 3),
                "draining": self.draining,
                **({"extra": dict(self.extra)} if self.extra else {}),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Member:
        d = _load(raw, "member")
        try:
            return cls(
                node=str(d["node"]),
                lease=int(d["lease"]),
                role=str(d["role"]),
                hub_eligible=bool(d.get("hub_eligible", False)),
                grpc_address=None if d.get("grpc") is None else str(d["grpc"]),
                server_ids=tuple(str(s) for s in d.get("server_ids", ())),
                started=float(d.get("started", 0.0)),
                draining=bool(d.get("draining", False)),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueFormatError(f"member: {e}") from e
