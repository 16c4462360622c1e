"""The only module that builds or parses etcd keys. Pure; no I/O.

Every key lives under a versioned root (default `/hubspoke/v1/`); prefixes end with `/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from hubspoke.model import parse_ipv4

DEFAULT_ROOT = "/hubspoke/v1"


class KeyError_(ValueError):
    """A key that does not parse under this schema."""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's convention)."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


@dataclass(frozen=True, slots=True)
class Keys:
    root: str = DEFAULT_ROOT

    def _k(self, *parts: str) -> bytes:
        return ("/".join((self.root.rstrip("/"), *parts))).encode()

    # scopes
    def scope(self, scope: str) -> bytes:
        return self._k("config", "scopes", scope)

    def scopes_prefix(self) -> bytes:
        return self._k("config", "scopes", "")

    # membership
    def member(self, node: str) -> bytes:
        return self._k("members", node)

    def members_prefix(self) -> bytes:
        return self._k("members", "")

    # hub election
    def election(self) -> bytes:
        return self._k("hub", "election", "")

    # assignments
    def buckets(self) -> bytes:
        return self._k("assign", "buckets")

    def block(self, scope: str, block_id: str) -> bytes:
        return self._k("assign", "blocks", scope, block_id)

    def blocks_prefix(self, scope: str | None = None) -> bytes:
        if scope is None:
            return self._k("assign", "blocks", "")
        return self._k("assign", "blocks", scope, "")

    # bindings
    def lease(self, scope: str, ip: IPv4Address) -> bytes:
        return self._k("leases", scope, str(ip))

    def leases_prefix(self, scope: str | None = None) -> bytes:
        if scope is None:
            return self._k("leases", "")
        return self._k("leases", scope, "")

    def parse_lease(self, key: bytes) -> tuple[str, IPv4Address]:
        prefix = self.leases_prefix()
        if not key.startswith(prefix):
            raise KeyError_(f"not a lease key: {key!r}")
        rest = key[len(prefix) :].decode()
        scope, sep, ip = rest.partition("/")
        if not sep or not scope:
            raise KeyError_(f"not a lease key: {key!r}")
        try:
            return scope, parse_ipv4(ip)
        except ValueError as e:
            raise KeyError_(f"bad address in lease key {key!r}") from e

    def lease_group(self, key: bytes) -> bytes | None:
        """The prefix of the /16 a lease key's address is in (`.../leases/<scope>/<a>.<b>.`:
        at most 65,536 keys), None for a key that is not a lease key. Loads read a big table
        one group at a time: etcd 3.4 walks every key up to a range's end for each page."""
        prefix = self.leases_prefix()
        if not key.startswith(prefix):
            return None
        slash = key.find(b"/", len(prefix))
        first_dot = key.find(b".", slash + 1)
        second_dot = key.find(b".", first_dot + 1)
        if slash < 0 or first_dot < 0 or second_dot < 0:
            return None
        return key[: second_dot + 1]

    def parse_block(self, key: bytes) -> tuple[str, str]:
        """(scope, block id) of an `assign/blocks/<scope>/<block-id>` key."""
        prefix = self.blocks_prefix()
        if not key.startswith(prefix):
            raise KeyError_(f"not a block key: {key!r}")
        scope, sep, block_id = key[len(prefix) :].decode().partition("/")
        if not sep or not scope or not block_id:
            raise KeyError_(f"not a block key: {key!r}")
        return scope, block_id

    def parse_member(self, key: bytes) -> str:
        prefix = self.members_prefix()
        if not key.startswith(prefix) or len(key) == len(prefix):
            raise KeyError_(f"not a member key: {key!r}")
        return key[len(prefix) :].decode()

    def parse_scope(self, key: bytes) -> str:
        prefix = self.scopes_prefix()
        if not key.startswith(prefix) or len(key) == len(prefix):
            raise KeyError_(f"not a scope key: {key!r}")
        return key[len(prefix) :].decode()

    def assign_prefix(self) -> bytes:
        """Everything spokes follow: `assign/buckets` and `assign/blocks/...`."""
        return self._k("assign", "")

    def drain(self, node: str) -> bytes:
        """Operator's drain request for `node` (written by the hub's API; absent: not drained)."""
        return self._k("drain", node)

    def drains_prefix(self) -> bytes:
        return self._k("drain", "")
