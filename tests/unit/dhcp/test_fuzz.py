"""Fuzzing stays (issue 12, point 7): random and mutated datagrams through decode, the engine, the
exchange and the reply encoder (`tests/lab/fuzz.py`: the target, the property, the seeds).

Bounded in `make test` (`FUZZ_EXAMPLES`, 300 by default: a few seconds); `make fuzz` runs it
longer. A failure prints the datagrams (hex) that broke the property; hypothesis keeps them in
its example database and replays them first next time.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lab.codec_packets import header, opt
from tests.lab.fuzz import Target, seeds

SEEDS = seeds()
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
HOSTILE = [
    header() + opt(53, b"\x01") + opt(61, b"\x01") * 1280 + b"\xff",
    header() + opt(53, b"\x01") + opt(12, b"\xff" * 255) * 14 + b"\xff",
    header() + opt(53, b"\x01") + opt(61, bytes(255)) + opt(82, bytes(255)) + b"\xff",
    header() + opt(53, b"\x03") + opt(61, bytes(200)) + opt(82, bytes(255)) + b"\xff",
    header(hlen=0) + opt(53, b"\x01") + b"\xff",
    header() + bytes(3800) + opt(53, b"\x01") + b"\xff",
]


def _apply(seed: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for kind, pos, blob in ops:
        pos = min(pos, len(data))
        if kind == 0:  # overwrite
            data[pos : pos + len(blob)] = blob
        elif kind == 1:  # insert
            data[pos:pos] = blob
        elif kind == 2:  # cut
            del data[pos:]
        else:  # a well-formed option in the options area
            at = max(pos, 240) if len(data) >= 240 else len(data)
            value = blob[1:256]
            data[at:at] = bytes((blob[0] if blob else 1, len(value))) + value
    return bytes(data[:4096])


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    op = st.tuples(st.integers(0, 3), st.integers(0, len(seed) + 16), st.binary(max_size=300))
    return st.lists(op, max_size=4).map(lambda ops: _apply(seed, ops))


datagram = st.one_of(
    st.sampled_from(SEEDS + HOSTILE).flatmap(mutated),
    st.binary(min_size=236, max_size=1500).map(
        lambda b: b[:236] + bytes((99, 130, 83, 99)) + b[236:]
    ),
    st.binary(max_size=600),
)


def test_every_seed_and_hostile_packet_holds_the_property() -> None:
    target = Target()
    for data in SEEDS + HOSTILE:
        target.feed(data)
        target.feed(data, broadcast=False)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(datagram, min_size=1, max_size=4), st.booleans())
def test_datagrams_never_break_the_request_path(datagrams: list[bytes], broadcast: bool) -> None:
    target = Target()
    for data in datagrams:
        target.feed(data, broadcast=broadcast)
