"""Decode time of hostile packets against a normal one (issue 12): `python -m bench.hostile_decode`.

The hostile packets: option 61 split into 1,280 one-byte parts (RFC 3396), the most a 4 KB
datagram holds, refused as `too-many-options` after 255 instances; the same in 200 parts (under
the cap, decoded); 3,840 PAD bytes before END. A decode that refuses is timed like one that
succeeds (the time to the `DecodeError`).
"""

from __future__ import annotations

import contextlib
import timeit

from spoke.dhcp.codec import DecodeError, decode
from tests.lab.codec_packets import header, opt, pad300


def normal() -> bytes:
    return pad300(
        header()
        + opt(53, b"\x01")
        + opt(61, b"\x01\x02\x00\x5e\x00\x00\xa1")
        + opt(55, bytes((1, 3, 6, 15, 28, 51, 58, 59)))
        + opt(12, b"laptop")
        + b"\xff"
    )


def split_client_id(parts: int = 1280) -> bytes:
    return header() + opt(53, b"\x01") + opt(61, b"\x01") * parts + b"\xff"


def padded() -> bytes:
    return header() + opt(53, b"\x01") + bytes(3840) + b"\xff"


def _decode(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


def per_call(data: bytes, number: int) -> float:
    best = min(timeit.repeat(lambda: _decode(data), number=number, repeat=5))
    return best / number * 1e6


def main() -> None:
    for name, data, number in (
        ("normal DISCOVER", normal(), 20000),
        ("option 61 in 1,280 one-byte parts", split_client_id(), 500),
        ("option 61 in 200 one-byte parts", split_client_id(200), 2000),
        ("3,840 PAD bytes", padded(), 2000),
    ):
        print(f"{name:36s} {len(data):5d} B  {per_call(data, number):8.1f} us/decode")


if __name__ == "__main__":
    main()
