"""The DHCP codec's error types, shared by the option table (hub) and the wire codec (spoke).

Pure; no I/O. `DecodeError` is the peer's fault and carries a stable `Reason` (a metric label);
`EncodeError` is ours. `spoke.dhcp.codec` re-exports all three.
"""

from __future__ import annotations

import enum

__all__ = ["DecodeError", "EncodeError", "Reason"]


class Reason(enum.StrEnum):
    """Why a packet was refused; stable strings, used as metric labels."""

    SHORT = "short"
    BAD_COOKIE = "bad-cookie"
    BAD_OP = "bad-op"
    BAD_HLEN = "bad-hlen"
    OPTION_OVERRUN = "option-overrun"
    BAD_OVERLOAD = "bad-overload"
    BAD_RELAY_INFO = "bad-relay-info"
    BAD_OPTION_VALUE = "bad-option-value"
    TOO_MANY_OPTIONS = "too-many-options"


class DecodeError(ValueError):
    """Malformed input: the peer's fault. `reason` is a short stable label."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


class EncodeError(Exception):
    """A message that cannot be put on the wire: our fault (bad field, or too large)."""
