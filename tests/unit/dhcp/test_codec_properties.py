"""Property tests for the codec: decode fails only with DecodeError; encode then decode is
the identity for messages that follow the codec's conventions (see spoke/dhcp/codec.py)."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import event, given, settings
from hypothesis import strategies as st

from spoke.dhcp.codec import DecodeError, EncodeError, decode, encode
from spoke.dhcp.message import Message, Op
from tests.lab.codec_packets import header, opt


def _decode_or_error(data: bytes) -> Message | None:
    """Decode; a DecodeError is a valid outcome, any other exception fails the test."""
    try:
        msg = decode(data)
    except DecodeError as exc:
        assert exc.reason  # every error carries a label
        return None
    assert isinstance(msg, Message)
    return msg


@settings(max_examples=500)
@given(st.binary(max_size=700))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    _decode_or_error(data)


option_bytes = st.one_of(
    st.binary(max_size=400),
    # well-formed-ish option runs, so that parsing goes deep before anything breaks
    st.lists(
        st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(
            lambda cv: bytes((cv[0], len(cv[1]))) + cv[1]
        ),
        max_size=12,
    ).map(b"".join),
)


@settings(max_examples=1000)
@given(
    op=st.integers(0, 3),
    hlen=st.integers(0, 20),
    sname=st.binary(max_size=64),
    file=st.binary(max_size=128),
    overload=st.one_of(st.none(), st.binary(min_size=0, max_size=2)),
    tail=option_bytes,
    end=st.booleans(),
)
def test_valid_prefix_with_random_options(
    op: int, hlen: int, sname: bytes, file: bytes, overload: bytes | None, tail: bytes, end: bool
) -> None:
    prefix = header(op=op, hlen=hlen, sname=sname, file=file)
    options = (opt(52, overload) if overload is not None else b"") + tail
    msg = _decode_or_error(prefix + options + (b"\xff" if end else b""))
    if msg is not None:
        assert msg.op in (Op.BOOTREQUEST, Op.BOOTREPLY)
        assert msg.hlen <= 16
        assert 52 not in msg.options and 0 not in msg.options and 255 not in msg.options


ip = st.integers(0, 2**32 - 1).map(IPv4Address)


def _no_nul(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=size).map(lambda b: b.replace(b"\x00", b"\x01"))


option_code = st.integers(1, 254).filter(lambda c: c != 52)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    return Message(
        op=draw(st.sampled_from(Op)),
        xid=draw(st.integers(0, 2**32 - 1)),
        chaddr=draw(st.binary(min_size=16, max_size=16)),
        htype=draw(st.integers(0, 255)),
        hlen=draw(st.integers(0, 16)),
        hops=draw(st.integers(0, 255)),
        secs=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.integers(0, 0xFFFF)),
        ciaddr=draw(ip),
        yiaddr=draw(ip),
        siaddr=draw(ip),
        giaddr=draw(ip),
        sname=draw(st.one_of(st.just(b""), _no_nul(64))),
        file=draw(st.one_of(st.just(b""), _no_nul(128))),
        options=draw(
            st.dictionaries(
                option_code,
                st.one_of(
                    st.binary(max_size=8),
                    st.integers(0, 300).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
                ),
                max_size=8,
            )
        ),
    )


@settings(max_examples=500)
@given(messages())
def test_encode_decode_round_trip(msg: Message) -> None:
    try:
        wire = encode(msg, max_size=576)
    except EncodeError:
        # too large for 576 bytes even overloaded: then it must fit a large datagram
        wire = encode(msg, max_size=65535)
        event("needs more than 576")
    else:
        assert 300 <= len(wire) <= 576 - 28
        overloaded = (not msg.file and any(wire[108:236])) or (not msg.sname and any(wire[44:108]))
        event("overloaded" if overloaded else "fits the options area")
    assert len(wire) >= 300
    assert decode(wire) == msg
    # overloading reorders codes on the wire (mapping equality ignores order); re-encoding the
    # decoded message gives the same message again
    assert decode(encode(decode(wire), max_size=65535)) == msg


@given(messages(), st.integers(0, 2000))
def test_encoded_size_never_exceeds_budget(msg: Message, max_size: int) -> None:
    try:
        wire = encode(msg, max_size=max_size)
    except EncodeError:
        return
    assert len(wire) <= max(max_size, 576) - 28
    assert decode(wire) == msg


@st.composite
def crowded_messages(draw: st.DrawFn) -> Message:
    """Messages whose options sit around what 576 bytes hold, so that overload is exercised."""
    sizes = draw(st.lists(st.integers(0, 120), min_size=3, max_size=8))
    codes = draw(st.lists(option_code, min_size=len(sizes), max_size=len(sizes), unique=True))
    return Message(
        op=Op.BOOTREPLY,
        xid=draw(st.integers(0, 2**32 - 1)),
        chaddr=draw(st.binary(min_size=16, max_size=16)),
        sname=draw(st.one_of(st.just(b""), _no_nul(64))),
        file=draw(st.one_of(st.just(b""), _no_nul(128))),
        options={c: bytes([c]) * n for c, n in zip(codes, sizes, strict=True)},
    )


@settings(max_examples=300)
@given(crowded_messages())
def test_overload_round_trip(msg: Message) -> None:
    needed = sum(2 + len(v) for v in msg.options.values()) + 1
    try:
        wire = encode(msg)
    except EncodeError:
        # it failed only because it needed more than the options area alone holds
        assert needed - 1 > 548 - 240 - 3 - 1
        event("does not fit")
        return
    assert len(wire) <= 548
    overloaded = wire[108:236] != msg.file.ljust(128, b"\0") or wire[44:108] != msg.sname.ljust(
        64, b"\0"
    )
    assert overloaded == (240 + needed > 548)
    event("overloaded" if overloaded else "fits the options area")
    assert decode(wire) == msg
