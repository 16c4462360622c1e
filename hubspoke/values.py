"""Versioned values stored in etcd, encoded and parsed at the edge. Pure; no I/O.

Every value is compact JSON with a `v` field; a value this version cannot read raises
`ValueFormatError` and is counted by the caller, never trusted.
"""

from __future__ import annotations

import json
from typing import Any

from hubspoke.model import Binding, BindingState, parse_ipv4

BINDING_VERSION = 1


class ValueFormatError(ValueError):
    """A stored value this version of the code cannot parse."""


def encode_binding(b: Binding) -> bytes:
    d: dict[str, Any] = {
        "v": BINDING_VERSION,
        "scope": b.scope,
        "ip": str(b.ip),
        "state": b.state.value,
        "client": b.client_key.hex(),
        "hw": b.hw_address.hex(),
        "start": round(b.start, 3),
        "expires": round(b.expires, 3),
        "node": b.node,
    }
    if b.hostname is not None:
        d["hostname"] = b.hostname
    return json.dumps(d, separators=(",", ":")).encode()


def decode_binding(raw: bytes) -> Binding:
    try:
        d = json.loads(raw)
        if not isinstance(d, dict) or d.get("v") != BINDING_VERSION:
            raise ValueFormatError(f"unsupported binding version: {raw[:60]!r}")
        hostname = d.get("hostname")
        return Binding(
            scope=str(d["scope"]),
            ip=parse_ipv4(d["ip"]),
            state=BindingState(d["state"]),
            client_key=bytes.fromhex(d["client"]),
            hw_address=bytes.fromhex(d["hw"]),
            start=float(d["start"]),
            expires=float(d["expires"]),
            node=str(d["node"]),
            hostname=None if hostname is None else str(hostname),
        )
    except ValueFormatError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ValueFormatError(f"bad binding value: {e}") from e


def encode_block_owner(node: str) -> bytes:
    return json.dumps({"v": 1, "owner": node}, separators=(",", ":")).encode()


def decode_block_owner(raw: bytes) -> str:
    try:
        d = json.loads(raw)
        if not isinstance(d, dict) or d.get("v") != 1:
            raise ValueFormatError("unsupported block value")
        return str(d["owner"])
    except ValueFormatError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ValueFormatError(f"bad block value: {e}") from e
