"""Owns the spoke's answer to "is this client in one of my hash buckets?". Pure; no I/O.

A `BucketFilter` holds the set of RFC 3074 buckets the hub gave this spoke (replaced whole by
the assignment follower) and is the engine's `is_mine` callable: one hash over the client
identifier (option 61), else the `hlen` bytes of chaddr, per broadcast request.
"""

from __future__ import annotations

from hubspoke.rfc3074 import client_bucket
from spoke.dhcp.message import Message


class BucketFilter:
    """`filter(msg)` is True when the client's bucket is ours. Starts owning no bucket."""

    def __init__(self, buckets: frozenset[int] = frozenset()) -> None:
        self.buckets = buckets

    def __call__(self, msg: Message) -> bool:
        return client_bucket(msg.client_id, msg.hardware_address) in self.buckets


def bucket_of_message(msg: Message) -> int:
    """The RFC 3074 bucket of the client that sent `msg`."""
    return client_bucket(msg.client_id, msg.hardware_address)
