"""Owns leader election through etcd's server-side `v3electionpb.Election` service.

Campaigners attach their key to their session lease; the lowest create revision under the
election name leads. The leader key's create revision is the epoch (fencing token): every
write the leader makes should compare it, so a deposed leader cannot write.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hubspoke.api.etcd import v3election_pb2
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdNoLeader
from hubspoke.etcd.records import KeyValue
from hubspoke.etcd.transport import translate

_ELECTION = "/v3electionpb.Election/"


@dataclass(frozen=True, slots=True)
class Leadership:
    """Proof of having won: the leader key and its create revision, the `epoch`."""

    name: bytes
    key: bytes
    epoch: int
    lease: int

    def to_pb(self) -> v3election_pb2.LeaderKey:
        return v3election_pb2.LeaderKey(
            name=self.name, key=self.key, rev=self.epoch, lease=self.lease
        )


@dataclass(frozen=True, slots=True)
class Leader:
    """The current leader as any observer sees it; `epoch` is its key's create revision."""

    key: bytes
    value: bytes
    epoch: int
    lease: int

    @classmethod
    def from_kv(cls, kv: KeyValue) -> Leader:
        return cls(key=kv.key, value=kv.value, epoch=kv.create_revision, lease=kv.lease)


class Election:
    """One election, named by a key prefix (e.g. `.../hub/election/`)."""

    def __init__(self, client: EtcdClient, name: bytes) -> None:
        self.client = client
        self.name = name

    async def campaign(self, lease_id: int, value: bytes) -> Leadership:
        """Block until this lease leads (no deadline); cancel the task to give up waiting.

        A cancelled campaign may leave its key queued until the lease ends: close the session.
        """
        request = v3election_pb2.CampaignRequest(name=self.name, lease=lease_id, value=value)
        response = await self.client.transport.unary(
            _ELECTION + "Campaign",
            request,
            v3election_pb2.CampaignResponse.FromString,
            idempotent=False,
            deadline=365 * 24 * 3600.0,
        )
        leader = response.leader
        return Leadership(name=leader.name, key=leader.key, epoch=leader.rev, lease=leader.lease)

    async def proclaim(self, leadership: Leadership, value: bytes) -> None:
        """Change the leader's value without losing leadership (fails if no longer leader)."""
        request = v3election_pb2.ProclaimRequest(leader=leadership.to_pb(), value=value)
        await self.client.transport.unary(
            _ELECTION + "Proclaim",
            request,
            v3election_pb2.ProclaimResponse.FromString,
            idempotent=True,
        )

    async def leader(self) -> Leader | None:
        """The current leader, None if nobody leads."""
        request = v3election_pb2.LeaderRequest(name=self.name)
        try:
            response = await self.client.transport.unary(
                _ELECTION + "Leader",
                request,
                v3election_pb2.LeaderResponse.FromString,
                idempotent=True,
            )
        except EtcdNoLeader:
            return None
        return Leader.from_kv(KeyValue.from_pb(response.kv))

    async def candidates(self) -> list[Leader]:
        """Everyone campaigning (the leader first, then the queue in the order it will lead)."""
        kvs, _ = await self.client.range_prefix_all(self.name + b"/")
        return sorted((Leader.from_kv(kv) for kv in kvs), key=lambda c: c.epoch)

    async def resign(self, leadership: Leadership) -> None:
        """Give up leadership (deletes the leader key); the next campaigner takes over."""
        request = v3election_pb2.ResignRequest(leader=leadership.to_pb())
        await self.client.transport.unary(
            _ELECTION + "Resign",
            request,
            v3election_pb2.ResignResponse.FromString,
            idempotent=True,
        )

    async def observe(self) -> AsyncIterator[Leader]:
        """Each leader as it takes office (the current one first). Ends if the stream breaks."""
        call: Any = self.client.transport.unary_stream(
            _ELECTION + "Observe",
            v3election_pb2.LeaderRequest(name=self.name),
            v3election_pb2.LeaderResponse.FromString,
        )
        try:
            while True:
                try:
                    response: Any = await call.read()
                except Exception as err:
                    raise translate(err) from err
                if not isinstance(response, v3election_pb2.LeaderResponse):
                    return
                yield Leader.from_kv(KeyValue.from_pb(response.kv))
        finally:
            with contextlib.suppress(Exception):
                call.cancel()
