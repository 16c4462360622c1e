"""Versioned values stored in etcd, encoded and parsed at the edge. Pure; no I/O.

Every value is compact JSON with a `v` field; a value this version cannot read raises
`ValueFormatError` and is counted by the caller, never trusted.

Sizes are bounded (issue 12): a binding's hostname is what a client sent in option 12, so it is
stored sanitized (`sanitize_hostname`: RFC 1035 characters, labels of at most 63, at most 253 in
all), and an encoded binding is at most `MAX_BINDING_VALUE` bytes: past that the hostname is left
out, and a binding still too large (a client key past RFC 2132's 255-byte client identifier) is
refused with `ValueTooLarge` before anything is written.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hubspoke.model import Binding, BindingState, parse_ipv4

BINDING_VERSION = 1
MAX_HOSTNAME = 253  # RFC 1035 2.3.4: 255 octets on the wire, 253 characters as text
MAX_LABEL = 63
MAX_BINDING_VALUE = 1024
"""Bytes of one encoded binding (189 typical; 256-byte client key and 253-byte hostname: ~900)."""

_NOT_HOSTNAME = re.compile(r"[^A-Za-z0-9._-]+")
_CLEAN_HOSTNAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*")


class ValueFormatError(ValueError):
    """A stored value this version of the code cannot parse."""


class ValueTooLarge(ValueError):
    """A value over its size cap: refused before it reaches etcd."""


def sanitize_hostname(raw: bytes | str) -> str | None:
    """A client's hostname (option 12) as stored and shown: only letters, digits, `-`, `_` and
    `.` (RFC 1035's characters, and the underscore some clients use; every other byte is
    dropped, as Kea does by default), no empty label, labels cut to 63 characters and the name
    to 253. None when nothing is left."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if len(text) <= MAX_HOSTNAME and _CLEAN_HOSTNAME.fullmatch(text):
        return text
    text = _NOT_HOSTNAME.sub("", text[: 4 * MAX_HOSTNAME])
    name = ".".join(label[:MAX_LABEL] for label in text.split(".") if label)
    return name[:MAX_HOSTNAME].rstrip(".") or None


def encode_binding(b: Binding) -> bytes:
    """Compact JSON of `b`, at most `MAX_BINDING_VALUE` bytes (see the module docstring)."""
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
        hostname = sanitize_hostname(b.hostname)
        if hostname is not None:
            d["hostname"] = hostname
    raw = json.dumps(d, separators=(",", ":")).encode()
    if len(raw) > MAX_BINDING_VALUE and "hostname" in d:
        del d["hostname"]
        raw = json.dumps(d, separators=(",", ":")).encode()
    if len(raw) > MAX_BINDING_VALUE:
        raise ValueTooLarge(f"binding of {b.ip} is {len(raw)} bytes (at most {MAX_BINDING_VALUE})")
    return raw


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
            hostname=None if hostname is None else sanitize_hostname(str(hostname)),
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
