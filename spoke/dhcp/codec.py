"""The DHCP wire format (RFC 2131, 2132, 3396): bytes to `Message` and back. Pure; no I/O.

`decode` is strict: anything malformed raises `DecodeError` (the peer's fault, with a stable
`reason` used as a metric label) and nothing else. `encode` raises `EncodeError` (our fault).
Both error types and `Reason` live in `hubspoke.dhcp.errors` (the option table raises them too) and
are re-exported here.

Conventions, decided here:
- Options end at END. A buffer that ends without END is accepted only when it ends exactly on an
  option boundary (some relays and embedded clients trim trailing padding); an option whose
  length byte or value runs past the buffer is `option-overrun`. Bytes after END are ignored.
- Repeated instances of a code are concatenated in order (RFC 3396), over the options area,
  then `file`, then `sname` when overloaded (RFC 2132 9.3). Option 52 is consumed by the codec:
  it never appears in `Message.options`, and the overloaded fields decode as empty. Inside an
  overloaded field the same END rule applies (a field filled up to its last byte needs no END).
- `sname` and `file`, when they hold strings, are NUL-terminated: decoding keeps the bytes
  before the first NUL.
- Encoding orders options as: message type (53), server identifier (54), the rest in mapping
  order; values over 255 bytes become consecutive instances. The datagram is padded with zeros
  to 300 bytes (the BOOTP minimum, RFC 1542). The UDP payload may not exceed
  `max_size - 28` (IP and UDP headers); `max_size` below 576, the minimum legal value of option
  57, is taken as 576. When the options do not fit, whole options move to `file` and then to
  `sname` (overload 1, 2 or 3, only into fields the message leaves empty); only options longer
  than 255 bytes are split to fit an area, since many clients do not join short options.
- So `decode(encode(m)) == m` for a message whose `chaddr` is 16 bytes (shorter ones are padded),
  whose `sname`/`file` hold no NUL, and whose options carry no framing code (0, 52, 255).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from ipaddress import IPv4Address

from hubspoke.dhcp.errors import DecodeError as DecodeError
from hubspoke.dhcp.errors import EncodeError as EncodeError
from hubspoke.dhcp.errors import Reason as Reason
from spoke.dhcp.message import ZERO, Message, Op

MAGIC_COOKIE = 0x63825363  # 99.130.83.99
HEADER_LEN = 236
OPTIONS_OFFSET = 240  # header + magic cookie
SNAME_OFFSET, SNAME_LEN = 44, 64
FILE_OFFSET, FILE_LEN = 108, 128
BOOTP_MIN_LEN = 300  # RFC 1542 section 2.1
MIN_MAX_SIZE = 576  # RFC 2132 9.10: smallest legal maximum DHCP message size
IP_UDP_HEADERS = 28

PAD, END, OVERLOAD = 0, 255, 52
MAX_OPTION_INSTANCES = 255
"""Option instances (not PAD or END) one message may carry, over all its areas. Real ones carry
tens (a long option split in 255-byte parts adds one per part); a datagram of one-byte parts
(1,280 fit in 4 KB) is refused as `too-many-options` after 255 of them, which bounds the decode
time of any datagram."""

_HEADER_IN = struct.Struct("!BBBBIHHIIII16s64s128sI")
_HEADER_OUT = struct.Struct("!BBBBIHH4s4s4s4s16s64s128sI")
_OVERLOAD_FILE, _OVERLOAD_SNAME = 1, 2


# -- decoding --------------------------------------------------------------------------------


def _ip(value: int) -> IPv4Address:
    return ZERO if value == 0 else IPv4Address(value)


def _cstring(raw: bytes) -> bytes:
    nul = raw.find(0)
    return raw if nul < 0 else raw[:nul]


def _parse_area(
    data: bytes,
    start: int,
    end: int,
    out: dict[int, bytes],
    split: dict[int, list[bytes]],
    budget: int,
) -> int:
    """Parse options in data[start:end] into `out`; the parts of a repeated code (RFC 3396)
    are collected in `split` and joined once by `_join` (joining part by part is quadratic).
    At most `budget` option instances; returns what is left of it. Runs of PAD are skipped at
    C speed, so the cost of an area is bounded by its option instances, not its bytes."""
    i = start
    while i < end:
        code = data[i]
        if code == PAD:
            i = end - len(data[i:end].lstrip(b"\x00"))
            if i == end:
                return budget
            code = data[i]
        if code == END:
            return budget
        if i + 1 >= end:
            raise DecodeError(Reason.OPTION_OVERRUN, f"option {code} at {i} has no length")
        j = i + 2 + data[i + 1]
        if j > end:
            raise DecodeError(Reason.OPTION_OVERRUN, f"option {code} at {i} runs past {end}")
        budget -= 1
        if budget < 0:
            raise DecodeError(
                Reason.TOO_MANY_OPTIONS, f"more than {MAX_OPTION_INSTANCES} option instances"
            )
        if code in out:
            parts = split.get(code)
            if parts is None:
                split[code] = [out[code], data[i + 2 : j]]
            else:
                parts.append(data[i + 2 : j])
        else:
            out[code] = data[i + 2 : j]
        i = j
    return budget


def _join(out: dict[int, bytes], split: dict[int, list[bytes]]) -> None:
    for code, parts in split.items():
        out[code] = b"".join(parts)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one BOOTP/DHCP message; raise `DecodeError` (only) when it is malformed."""
    buf = data if type(data) is bytes else bytes(data)
    if len(buf) < OPTIONS_OFFSET:
        raise DecodeError(Reason.SHORT, f"{len(buf)} bytes")
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file, cookie) = (
        _HEADER_IN.unpack_from(buf)
    )
    if cookie != MAGIC_COOKIE:
        raise DecodeError(Reason.BAD_COOKIE, f"{cookie:#010x}")
    if op != 1 and op != 2:
        raise DecodeError(Reason.BAD_OP, str(op))
    if hlen > 16:
        raise DecodeError(Reason.BAD_HLEN, str(hlen))
    options: dict[int, bytes] = {}
    split: dict[int, list[bytes]] = {}
    budget = _parse_area(buf, OPTIONS_OFFSET, len(buf), options, split, MAX_OPTION_INSTANCES)
    if split:
        _join(options, split)
    overload = options.pop(OVERLOAD, None)
    if overload is None:
        sname, file = _cstring(sname), _cstring(file)
    else:
        if len(overload) != 1 or not 1 <= overload[0] <= 3:
            raise DecodeError(Reason.BAD_OVERLOAD, overload.hex())
        # file, then sname, each continuing what the options area began (RFC 3396 order)
        extra: dict[int, bytes] = {}
        extra_split: dict[int, list[bytes]] = {}
        if overload[0] & _OVERLOAD_FILE:
            budget = _parse_area(
                buf, FILE_OFFSET, FILE_OFFSET + FILE_LEN, extra, extra_split, budget
            )
            file = b""
        else:
            file = _cstring(file)
        if overload[0] & _OVERLOAD_SNAME:
            _parse_area(buf, SNAME_OFFSET, SNAME_OFFSET + SNAME_LEN, extra, extra_split, budget)
            sname = b""
        else:
            sname = _cstring(sname)
        if OVERLOAD in extra:
            raise DecodeError(Reason.BAD_OVERLOAD, "option 52 inside an overloaded field")
        if extra_split:
            _join(extra, extra_split)
        for code, value in extra.items():
            prev = options.get(code)
            options[code] = value if prev is None else prev + value
    return Message(  # positional: measurably faster than keywords for a frozen dataclass
        Op.BOOTREQUEST if op == 1 else Op.BOOTREPLY,
        xid,
        chaddr,
        htype,
        hlen,
        hops,
        secs,
        flags,
        _ip(ci),
        _ip(yi),
        _ip(si),
        _ip(gi),
        sname,
        file,
        options,
    )


# -- encoding --------------------------------------------------------------------------------


def _ordered(options: Mapping[int, bytes]) -> tuple[list[tuple[int, bytes]], bytes]:
    """Options in wire order (53, 54, then mapping order), checked; and their serialization."""
    items: list[tuple[int, bytes]] = []
    head: list[tuple[int, bytes]] = []
    for code, value in options.items():
        if (type(code) is not int and not isinstance(code, int)) or not 0 < code < 255:
            raise EncodeError(f"option code {code!r} cannot be set in a message")
        if type(value) is not bytes:
            if not isinstance(value, bytearray):
                raise EncodeError(f"option {code} value is {type(value).__name__}, not bytes")
            value = bytes(value)
        if code == 53 or code == 54:
            head.append((code, value))
        elif code == OVERLOAD:
            raise EncodeError("option 52 (overload) is set by the codec")
        else:
            items.append((code, value))
    if head:
        head.sort()
        items[:0] = head
    body = bytearray()
    for code, value in items:
        n = len(value)
        if n <= 255:
            body.append(code)
            body.append(n)
            body += value
        else:
            for k in range(0, n, 255):
                chunk = value[k : k + 255]
                body.append(code)
                body.append(len(chunk))
                body += chunk
    return items, bytes(body)


def _pack(items: list[tuple[int, bytes]], capacities: list[int]) -> list[bytearray]:
    """Place options into areas (main, then the overload fields) in order; first fit.

    An option up to 255 bytes moves whole; a longer one is split to fill each area in turn.
    """
    areas = [bytearray() for _ in capacities]
    for code, value in items:
        if len(value) <= 255:
            unit = bytes((code, len(value))) + value
            for area, cap in zip(areas, capacities, strict=True):
                if len(area) + len(unit) <= cap:
                    area += unit
                    break
            else:
                raise EncodeError(f"option {code} ({len(value)} bytes) does not fit")
            continue
        a, k = 0, 0
        while k < len(value):
            room = capacities[a] - len(areas[a]) - 2
            if room < 1:
                a += 1
                if a == len(areas):
                    raise EncodeError(f"option {code} ({len(value)} bytes) does not fit")
                continue
            n = min(room, 255, len(value) - k)
            areas[a] += bytes((code, n)) + value[k : k + n]
            k += n
    return areas


def _field(raw: bytes, size: int, name: str) -> bytes:
    if (type(raw) is not bytes and not isinstance(raw, bytearray)) or len(raw) > size:
        raise EncodeError(f"{name} must be bytes of at most {size}")
    return raw if type(raw) is bytes else bytes(raw)


def fits(msg: Message, *, max_size: int = MIN_MAX_SIZE) -> bool:
    """Whether `msg`'s options fit in `max_size` (so that `encode` does not refuse it as too
    large): a sum of option sizes for the usual message, a trial encode only when the options
    need more than the options area (with overload, `file` and `sname` may still hold them)."""
    budget = max(max_size, MIN_MAX_SIZE) - IP_UDP_HEADERS
    size = OPTIONS_OFFSET + 1
    for value in msg.options.values():
        n = len(value)
        size += n + 2 * max(1, -(-n // 255))
    if size <= budget:
        return True
    try:
        encode(msg, max_size=max_size)
    except EncodeError:
        return False
    return True


def encode(msg: Message, *, max_size: int = MIN_MAX_SIZE) -> bytes:
    """Encode `msg` in at most `max_size - 28` bytes; raise `EncodeError` if impossible."""
    budget = max(max_size, MIN_MAX_SIZE) - IP_UDP_HEADERS
    if msg.op not in (1, 2):
        raise EncodeError(f"op {msg.op!r} is neither BOOTREQUEST nor BOOTREPLY")
    if not 0 <= msg.hlen <= 16:
        raise EncodeError(f"hlen {msg.hlen} exceeds 16")
    chaddr = _field(msg.chaddr, 16, "chaddr")
    sname = _field(msg.sname, SNAME_LEN, "sname")
    file = _field(msg.file, FILE_LEN, "file")
    items, body = _ordered(msg.options)
    if OPTIONS_OFFSET + len(body) + 1 <= budget:
        main = body + b"\xff"
    else:
        main, sname, file = _overload(items, budget, sname, file)
    try:
        header = _HEADER_OUT.pack(
            msg.op,
            msg.htype,
            msg.hlen,
            msg.hops,
            msg.xid,
            msg.secs,
            msg.flags,
            msg.ciaddr.packed,
            msg.yiaddr.packed,
            msg.siaddr.packed,
            msg.giaddr.packed,
            chaddr,
            sname,
            file,
            MAGIC_COOKIE,
        )
    except (struct.error, AttributeError) as exc:
        raise EncodeError(f"bad header field: {exc}") from exc
    out = header + main
    if len(out) < BOOTP_MIN_LEN:
        out += bytes(BOOTP_MIN_LEN - len(out))
    return out


def _overload(
    items: list[tuple[int, bytes]], budget: int, sname: bytes, file: bytes
) -> tuple[bytes, bytes, bytes]:
    """Spread options over the options area, `file` and `sname` (RFC 2132 9.3)."""
    fields: list[tuple[int, int]] = []  # (flag, size) of the fields we may use, in order
    if not file:
        fields.append((_OVERLOAD_FILE, FILE_LEN))
    if not sname:
        fields.append((_OVERLOAD_SNAME, SNAME_LEN))
    if not fields:
        raise EncodeError("options do not fit and sname/file are in use")
    main_cap = budget - OPTIONS_OFFSET - 3 - 1  # option 52 and END
    areas = _pack(items, [main_cap] + [size - 1 for _, size in fields])
    flag = 0
    for (bit, size), area in zip(fields, areas[1:], strict=True):
        if area:
            flag |= bit
            padded = bytes(area) + b"\xff" + bytes(size - 1 - len(area))
            if bit == _OVERLOAD_FILE:
                file = padded
            else:
                sname = padded
    main = bytes(areas[0])
    if not flag:  # everything fitted after all (cannot happen with the capacities above)
        return main + b"\xff", sname, file
    at = 2 + main[1] if main[:1] == b"\x35" else 0  # right after the message type
    return main[:at] + bytes((OVERLOAD, 1, flag)) + main[at:] + b"\xff", sname, file
