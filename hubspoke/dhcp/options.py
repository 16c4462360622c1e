"""Known DHCP options as data, the config-facing option encoder, and relay agent information
(RFC 3046). Pure; no I/O.

`OPTIONS` maps a code to its name, value kind and whether the server owns it. Server-owned
codes are refused in scope configuration (`check_config_option`): framing (0, 52, 255),
protocol state the engine sets per message (53 message type, 54 server identifier, 56 message,
80 rapid commit, 81 client FQDN), what only clients or relays send (50, 55, 57, 61, 82, 118,
91), and lease timing: 51 lease time and 58/59 renewal/rebinding (T1/T2) come from the scope's
lease fields, never from options, so that a lease and its timers cannot disagree.
`encode_option_value` itself encodes any code (the engine uses it for 51/58/59).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from hubspoke.dhcp.errors import DecodeError, Reason
from hubspoke.dhcp.option_values import (
    DECODERS,
    ENCODERS,
    Kind,
    OptionValueError,
    encode_bytes,
)

__all__ = [
    "OPTIONS",
    "OPTION_NAMES",
    "SERVER_OWNED",
    "Kind",
    "OptionSpec",
    "OptionValueError",
    "RelaySubOpt",
    "build_relay_agent_info",
    "check_config_option",
    "decode_option_value",
    "encode_option_value",
    "option_code",
    "option_name",
    "parse_relay_agent_info",
    "relay_sub_option",
]


@dataclass(frozen=True, slots=True)
class OptionSpec:
    code: int
    name: str
    kind: Kind
    server_owned: bool = False  # set by the server or sent by clients/relays; refused in config


def _table(*rows: tuple[int, str, Kind] | tuple[int, str, Kind, bool]) -> Mapping[int, OptionSpec]:
    specs = [OptionSpec(*row) for row in rows]
    return MappingProxyType({spec.code: spec for spec in specs})


_OWNED = True
OPTIONS: Mapping[int, OptionSpec] = _table(
    (0, "pad", Kind.BYTES, _OWNED),
    (1, "subnet-mask", Kind.IP),
    (2, "time-offset", Kind.I32),
    (3, "routers", Kind.IP_LIST),
    (4, "time-servers", Kind.IP_LIST),
    (5, "name-servers", Kind.IP_LIST),
    (6, "dns-servers", Kind.IP_LIST),
    (7, "log-servers", Kind.IP_LIST),
    (9, "lpr-servers", Kind.IP_LIST),
    (12, "hostname", Kind.STR),
    (13, "boot-file-size", Kind.U16),
    (15, "domain-name", Kind.STR),
    (17, "root-path", Kind.STR),
    (19, "ip-forwarding", Kind.BOOL),
    (23, "default-ip-ttl", Kind.U8),
    (26, "interface-mtu", Kind.U16),
    (28, "broadcast-address", Kind.IP),
    (35, "arp-cache-timeout", Kind.U32),
    (37, "tcp-default-ttl", Kind.U8),
    (38, "tcp-keepalive-interval", Kind.U32),
    (40, "nis-domain", Kind.STR),
    (41, "nis-servers", Kind.IP_LIST),
    (42, "ntp-servers", Kind.IP_LIST),
    (43, "vendor-specific", Kind.BYTES),
    (44, "netbios-name-servers", Kind.IP_LIST),
    (45, "netbios-dd-servers", Kind.IP_LIST),
    (46, "netbios-node-type", Kind.U8),
    (47, "netbios-scope", Kind.STR),
    (50, "requested-address", Kind.IP, _OWNED),
    (51, "lease-time", Kind.U32, _OWNED),
    (52, "overload", Kind.U8, _OWNED),
    (53, "message-type", Kind.U8, _OWNED),
    (54, "server-id", Kind.IP, _OWNED),
    (55, "parameter-request-list", Kind.BYTES, _OWNED),
    (56, "message", Kind.STR, _OWNED),
    (57, "max-message-size", Kind.U16, _OWNED),
    (58, "renewal-time", Kind.U32, _OWNED),
    (59, "rebinding-time", Kind.U32, _OWNED),
    (60, "vendor-class-id", Kind.STR),
    (61, "client-id", Kind.BYTES, _OWNED),
    (64, "nisplus-domain", Kind.STR),
    (65, "nisplus-servers", Kind.IP_LIST),
    (66, "tftp-server-name", Kind.STR),
    (67, "bootfile-name", Kind.STR),
    (69, "smtp-servers", Kind.IP_LIST),
    (70, "pop3-servers", Kind.IP_LIST),
    (72, "www-servers", Kind.IP_LIST),
    (80, "rapid-commit", Kind.BYTES, _OWNED),
    (81, "client-fqdn", Kind.BYTES, _OWNED),
    (82, "relay-agent-info", Kind.BYTES, _OWNED),
    (91, "client-last-transaction-time", Kind.U32, _OWNED),
    (100, "posix-timezone", Kind.STR),
    (101, "tzdb-timezone", Kind.STR),
    (114, "captive-portal", Kind.STR),
    (118, "subnet-selection", Kind.IP, _OWNED),
    (119, "domain-search", Kind.DOMAIN_LIST),
    (121, "classless-static-routes", Kind.ROUTES),
    (150, "tftp-server-address", Kind.IP_LIST),
    (249, "ms-classless-static-routes", Kind.ROUTES),
    (252, "wpad-url", Kind.STR),
    (255, "end", Kind.BYTES, _OWNED),
)

SERVER_OWNED: frozenset[int] = frozenset(s.code for s in OPTIONS.values() if s.server_owned)
OPTION_NAMES: Mapping[str, int] = MappingProxyType({s.name: s.code for s in OPTIONS.values()})


def option_name(code: int) -> str:
    """The table's name for `code`, or `option-<code>` for one the table does not know."""
    spec = OPTIONS.get(code)
    return spec.name if spec is not None else f"option-{code}"


def _label(code: int) -> str:
    return f"option {code} ({option_name(code)})"


def option_code(key: str | int) -> int:
    """A code from a config key: a known name, `option-<n>`, or the number itself (1..254)."""
    code: int | None
    if isinstance(key, bool):
        code = None
    elif isinstance(key, int):
        code = key
    elif key in OPTION_NAMES:
        code = OPTION_NAMES[key]
    else:
        digits = key.removeprefix("option-")
        code = int(digits) if digits.isdigit() else None
    if code is None or not 0 <= code <= 255:
        raise OptionValueError(f"{key!r} is not a known option name or a code 0..255")
    return code


def encode_option_value(code: int, value: object) -> bytes:
    """Encode a configured value for `code` by the table's kind.

    Any code also takes raw bytes or `{"hex": "..."}`; an unknown code takes only those.
    """
    if not 0 <= code <= 255:
        raise OptionValueError(f"option code {code} is outside 0..255")
    if isinstance(value, bytes | bytearray) or (isinstance(value, Mapping) and "hex" in value):
        encoder: Callable[[object], bytes] = encode_bytes
    else:
        spec = OPTIONS.get(code)
        encoder = ENCODERS[spec.kind] if spec is not None else encode_bytes
    try:
        return encoder(value)
    except OptionValueError as exc:
        raise OptionValueError(f"{_label(code)}: {exc}") from None


def check_config_option(key: str | int, value: object) -> tuple[int, bytes]:
    """Validate one option from scope configuration; refuse codes the server owns."""
    code = option_code(key)
    if code in SERVER_OWNED:
        hint = (
            ": set the scope's lease time fields instead"
            if code in (51, 58, 59)
            else ": the server sets it"
        )
        raise OptionValueError(f"{_label(code)} cannot be configured{hint}")
    return code, encode_option_value(code, value)


def decode_option_value(code: int, raw: bytes) -> object:
    """The typed value of `raw` by the table's kind (bytes for unknown codes)."""
    spec = OPTIONS.get(code)
    return raw if spec is None else DECODERS[spec.kind](raw)


# -- relay agent information (RFC 3046) ----------------------------------------------------


class RelaySubOpt(enum.IntEnum):
    CIRCUIT_ID = 1
    REMOTE_ID = 2
    LINK_SELECTION = 5  # RFC 3527
    SUBSCRIBER_ID = 6  # RFC 3993
    SERVER_ID_OVERRIDE = 11  # RFC 5107


def parse_relay_agent_info(raw: bytes) -> tuple[tuple[int, bytes], ...]:
    """Sub-options of option 82, in order. RFC 3046 has no PAD or END inside the option."""
    subs: list[tuple[int, bytes]] = []
    i = 0
    n = len(raw)
    while i < n:
        if i + 1 >= n:
            raise DecodeError(Reason.BAD_RELAY_INFO, f"sub-option {raw[i]} has no length")
        j = i + 2 + raw[i + 1]
        if j > n:
            raise DecodeError(Reason.BAD_RELAY_INFO, f"sub-option {raw[i]} runs past {n}")
        subs.append((raw[i], bytes(raw[i + 2 : j])))
        i = j
    if not subs:
        raise DecodeError(Reason.BAD_RELAY_INFO, "no sub-options")
    return tuple(subs)


def build_relay_agent_info(subs: Iterable[tuple[int, bytes]]) -> bytes:
    """Option 82's value from (code, value) sub-options; raise ValueError when impossible."""
    out = bytearray()
    for code, value in subs:
        if not 0 <= code <= 255 or len(value) > 255:
            raise ValueError(f"relay sub-option {code} with {len(value)} bytes cannot be encoded")
        out += bytes((code, len(value))) + value
    if not out:
        raise ValueError("relay agent information needs at least one sub-option")
    return bytes(out)


def relay_sub_option(subs: Iterable[tuple[int, bytes]], code: int) -> bytes | None:
    """The first sub-option `code` in `subs`, or None."""
    return next((value for sub, value in subs if sub == code), None)
