"""Decode and encode of hand-built packets: what real clients and relays send, and what breaks."""

from __future__ import annotations

from ipaddress import IPv4Address

import dpkt
import pytest

from spoke.dhcp.codec import (
    DecodeError,
    EncodeError,
    Reason,
    decode,
    encode,
)
from spoke.dhcp.message import Message, MessageType, Op
from tests.lab.codec_packets import MAC, header, opt, pad300

CHADDR16 = MAC + bytes(10)
UDHCPC_PRL = bytes((1, 3, 6, 12, 15, 28, 42, 51, 54, 58, 59, 119))

# A DISCOVER as busybox udhcpc sends it: client id (type 1 + MAC), max size, vendor class.
UDHCPC_DISCOVER = pad300(
    header(xid=0x3903F326, secs=3, flags=0x8000)
    + opt(53, b"\x01")
    + opt(61, b"\x01" + MAC)
    + opt(57, b"\x02\x40")
    + opt(55, UDHCPC_PRL)
    + opt(60, b"udhcp 1.36.1")
    + opt(12, b"node-a")
    + b"\xff"
)

RELAY_INFO = opt(1, b"eth0/1/3") + opt(2, MAC)
# A REQUEST relayed once: giaddr and hops set, option 82 appended by the relay before END.
RELAYED_REQUEST = pad300(
    header(xid=7, hops=1, giaddr="10.1.0.1")
    + opt(53, b"\x03")
    + opt(50, bytes((10, 1, 0, 57)))
    + opt(54, bytes((10, 0, 0, 2)))
    + opt(61, b"\x01" + MAC)
    + opt(82, RELAY_INFO)
    + b"\xff"
)

# Overload 3: options continue in `file`, then in `sname`; option 6 is split over all three.
OVERLOADED = (
    header(
        xid=9,
        file=opt(6, bytes((10, 0, 0, 2))) + opt(15, b"example.org") + b"\xff",
        sname=opt(6, bytes((10, 0, 0, 3))) + opt(12, b"h") + b"\xff",
    )
    + opt(53, b"\x05")
    + opt(52, b"\x03")
    + opt(6, bytes((10, 0, 0, 1)))
    + b"\xff"
)

LONG_119 = bytes(range(200)) + bytes(range(100))  # 300 bytes: two instances on the wire
SPLIT_LONG = pad300(
    header(op=2, xid=11)
    + opt(53, b"\x02")
    + opt(119, LONG_119[:255])
    + opt(1, bytes((255, 255, 255, 0)))
    + opt(119, LONG_119[255:])
    + b"\xff"
)

DECODE_CASES = [
    pytest.param(
        UDHCPC_DISCOVER,
        Message(
            op=Op.BOOTREQUEST,
            xid=0x3903F326,
            chaddr=CHADDR16,
            secs=3,
            flags=0x8000,
            options={
                53: b"\x01",
                61: b"\x01" + MAC,
                57: b"\x02\x40",
                55: UDHCPC_PRL,
                60: b"udhcp 1.36.1",
                12: b"node-a",
            },
        ),
        id="udhcpc-discover",
    ),
    pytest.param(
        RELAYED_REQUEST,
        Message(
            op=Op.BOOTREQUEST,
            xid=7,
            chaddr=CHADDR16,
            hops=1,
            giaddr=IPv4Address("10.1.0.1"),
            options={
                53: b"\x03",
                50: bytes((10, 1, 0, 57)),
                54: bytes((10, 0, 0, 2)),
                61: b"\x01" + MAC,
                82: RELAY_INFO,
            },
        ),
        id="relayed-request",
    ),
    pytest.param(
        OVERLOADED,
        Message(
            op=Op.BOOTREQUEST,
            xid=9,
            chaddr=CHADDR16,
            options={
                53: b"\x05",
                6: bytes((10, 0, 0, 1, 10, 0, 0, 2, 10, 0, 0, 3)),
                15: b"example.org",
                12: b"h",
            },
        ),
        id="overloaded-3",
    ),
    pytest.param(
        header(xid=9, file=opt(12, b"x") + b"\xff", sname=b"srv") + opt(52, b"\x01") + b"\xff",
        Message(op=Op.BOOTREQUEST, xid=9, chaddr=CHADDR16, sname=b"srv", options={12: b"x"}),
        id="overloaded-1-keeps-sname",
    ),
    pytest.param(
        header(xid=9, file=b"pxelinux.0", sname=opt(12, b"x")) + opt(52, b"\x02") + b"\xff",
        Message(op=Op.BOOTREQUEST, xid=9, chaddr=CHADDR16, file=b"pxelinux.0", options={12: b"x"}),
        id="overloaded-2-sname-without-end",
    ),
    pytest.param(
        SPLIT_LONG,
        Message(
            op=Op.BOOTREPLY,
            xid=11,
            chaddr=CHADDR16,
            options={53: b"\x02", 119: LONG_119, 1: bytes((255, 255, 255, 0))},
        ),
        id="split-long-option",
    ),
    pytest.param(
        header(sname=b"boot\x00junk", file=b"pxelinux.0") + b"\x00\x00" + opt(53, b"\x01"),
        Message(
            op=Op.BOOTREQUEST,
            xid=0x3903F326,
            chaddr=CHADDR16,
            sname=b"boot",
            file=b"pxelinux.0",
            options={53: b"\x01"},
        ),
        id="pad-then-no-end-at-boundary",
    ),
    pytest.param(
        header() + opt(80, b"") + b"\xff" + b"\x35\x99garbage-after-end",
        Message(op=Op.BOOTREQUEST, xid=0x3903F326, chaddr=CHADDR16, options={80: b""}),
        id="empty-option-and-bytes-after-end",
    ),
    pytest.param(
        header(),
        Message(op=Op.BOOTREQUEST, xid=0x3903F326, chaddr=CHADDR16),
        id="no-options-at-all",
    ),
]


@pytest.mark.parametrize(("wire", "expected"), DECODE_CASES)
def test_decode(wire: bytes, expected: Message) -> None:
    assert decode(wire) == expected


@pytest.mark.parametrize(("wire", "expected"), DECODE_CASES)
def test_decode_encode_decode(wire: bytes, expected: Message) -> None:
    again = decode(encode(decode(wire)))
    assert again == expected


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(UDHCPC_DISCOVER)) == decode(memoryview(UDHCPC_DISCOVER))


def test_typed_accessors_on_decoded_packets() -> None:
    discover = decode(UDHCPC_DISCOVER)
    assert discover.message_type is MessageType.DISCOVER
    assert discover.hardware_address == MAC
    assert discover.client_id == b"\x01" + MAC
    request = decode(RELAYED_REQUEST)
    assert request.requested_address == IPv4Address("10.1.0.57")
    assert request.server_id == IPv4Address("10.0.0.2")
    assert request.relay_agent_info == RELAY_INFO


ERROR_CASES = [
    pytest.param(b"", Reason.SHORT, id="empty"),
    pytest.param(header()[:239], Reason.SHORT, id="short-header"),
    pytest.param(header(cookie=b"\x63\x82\x53\x64"), Reason.BAD_COOKIE, id="bad-cookie"),
    pytest.param(header(op=3), Reason.BAD_OP, id="op-3"),
    pytest.param(header(op=0), Reason.BAD_OP, id="op-0"),
    pytest.param(header(hlen=17), Reason.BAD_HLEN, id="hlen-17"),
    pytest.param(header() + b"\x35", Reason.OPTION_OVERRUN, id="no-length-byte"),
    pytest.param(header() + b"\x35\x02\x01", Reason.OPTION_OVERRUN, id="value-past-end"),
    pytest.param(
        header() + opt(53, b"\x01") + b"\x3d\x07\x01", Reason.OPTION_OVERRUN, id="truncated-cid"
    ),
    pytest.param(header() + opt(52, b"\x04") + b"\xff", Reason.BAD_OVERLOAD, id="overload-4"),
    pytest.param(header() + opt(52, b"\x00") + b"\xff", Reason.BAD_OVERLOAD, id="overload-0"),
    pytest.param(header() + opt(52, b"\x01\x01") + b"\xff", Reason.BAD_OVERLOAD, id="overload-len"),
    pytest.param(
        header() + opt(52, b"\x01") + opt(52, b"\x01") + b"\xff",
        Reason.BAD_OVERLOAD,
        id="overload-twice",
    ),
    pytest.param(
        header(file=opt(52, b"\x02") + b"\xff") + opt(52, b"\x01") + b"\xff",
        Reason.BAD_OVERLOAD,
        id="overload-inside-file",
    ),
    pytest.param(
        header(file=bytes(120) + b"\x0c\x20") + opt(52, b"\x01") + b"\xff" + bytes(64),
        Reason.OPTION_OVERRUN,
        id="file-option-crosses-field-end",
    ),
    pytest.param(
        header(sname=bytes(63) + b"\x0c") + opt(52, b"\x02") + b"\xff",
        Reason.OPTION_OVERRUN,
        id="sname-length-byte-missing",
    ),
]


@pytest.mark.parametrize(("wire", "reason"), ERROR_CASES)
def test_decode_errors(wire: bytes, reason: Reason) -> None:
    with pytest.raises(DecodeError) as info:
        decode(wire)
    assert info.value.reason == reason
    assert info.value.reason == str(reason)  # usable as a plain string label


# -- encoding ---------------------------------------------------------------------------------

REPLY = Message(
    op=Op.BOOTREPLY,
    xid=0x01020304,
    chaddr=CHADDR16,
    yiaddr=IPv4Address("10.0.0.57"),
    siaddr=IPv4Address("10.0.0.2"),
    options={
        1: bytes((255, 255, 255, 0)),
        3: bytes((10, 0, 0, 1)),
        54: bytes((10, 0, 0, 2)),
        51: (3600).to_bytes(4, "big"),
        53: b"\x05",
    },
)


def test_encode_pads_to_bootp_minimum_and_orders_options() -> None:
    wire = encode(REPLY)
    assert len(wire) == 300
    expected_options = (
        opt(53, b"\x05")
        + opt(54, bytes((10, 0, 0, 2)))
        + opt(1, bytes((255, 255, 255, 0)))
        + opt(3, bytes((10, 0, 0, 1)))
        + opt(51, (3600).to_bytes(4, "big"))
        + b"\xff"
    )
    assert wire[240 : 240 + len(expected_options)] == expected_options
    assert wire[240 + len(expected_options) :] == bytes(300 - 240 - len(expected_options))
    assert wire[:240] == header(
        op=2, xid=0x01020304, yiaddr="10.0.0.57", siaddr="10.0.0.2", chaddr=CHADDR16
    )


def test_encode_splits_long_option_into_consecutive_instances() -> None:
    value = bytes(i % 251 for i in range(600))
    msg = Message(op=Op.BOOTREPLY, xid=1, chaddr=CHADDR16, options={43: value})
    wire = encode(msg, max_size=1500)
    expected = opt(43, value[:255]) + opt(43, value[255:510]) + opt(43, value[510:]) + b"\xff"
    assert wire[240:] == expected
    assert decode(wire).options == {43: value}


def _big_reply(file: bytes = b"", sname: bytes = b"") -> Message:
    return Message(
        op=Op.BOOTREPLY,
        xid=5,
        chaddr=CHADDR16,
        file=file,
        sname=sname,
        options={
            53: b"\x05",
            54: bytes((10, 0, 0, 2)),
            43: bytes(200),  # vendor-specific
            119: bytes(range(1, 51)),  # 50 bytes
            6: bytes(range(40)),  # 10 servers: 42 bytes on the wire, the one that moves
            15: b"x" * 30,
        },
    )


def test_encode_overloads_into_file_then_sname() -> None:
    msg = _big_reply()
    wire = encode(msg, max_size=576)
    assert len(wire) <= 576 - 28
    ours = decode(wire)
    assert ours == msg
    # The wire carries option 52 right after the message type, and options in `file`.
    assert wire[240:246] == opt(53, b"\x05") + opt(52, b"\x01")
    assert wire[108] != 0


def test_encode_overloads_into_sname_when_file_is_used() -> None:
    msg = _big_reply(file=b"pxelinux.0")
    wire = encode(msg, max_size=576)
    assert len(wire) <= 548
    assert wire[240:246] == opt(53, b"\x05") + opt(52, b"\x02")
    assert decode(wire) == msg


def test_encode_uses_both_fields_when_needed() -> None:
    msg = Message(
        op=Op.BOOTREPLY,
        xid=5,
        chaddr=CHADDR16,
        options={53: b"\x05", 43: bytes(250), 60: bytes(60), 119: b"a" * 50, 15: b"b" * 50},
    )
    wire = encode(msg)
    assert len(wire) <= 548
    assert wire[240:246] == opt(53, b"\x05") + opt(52, b"\x03")
    assert decode(wire) == msg


def test_encode_without_overload_when_max_size_allows() -> None:
    msg = _big_reply()
    wire = encode(msg, max_size=1500)
    assert 52 not in {wire[240]}  # message type first, no overload option
    assert wire[240:243] == opt(53, b"\x05")
    assert wire[243:249] == opt(54, bytes((10, 0, 0, 2)))
    assert wire[108:236] == bytes(128)
    assert decode(wire) == msg


def test_max_size_below_576_is_taken_as_576() -> None:
    assert encode(_big_reply(), max_size=300) == encode(_big_reply(), max_size=576)


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(_big_reply(file=b"f", sname=b"s"), id="fields-in-use"),
        pytest.param(
            Message(op=Op.BOOTREPLY, xid=1, chaddr=CHADDR16, options={43: bytes(900)}),
            id="too-large-even-overloaded",
        ),
    ],
)
def test_encode_raises_when_it_cannot_fit(msg: Message) -> None:
    with pytest.raises(EncodeError):
        encode(msg)


BAD = Message(op=Op.BOOTREPLY, xid=1, chaddr=CHADDR16)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"chaddr": bytes(17)}, id="chaddr-17"),
        pytest.param({"sname": bytes(65)}, id="sname-65"),
        pytest.param({"file": bytes(129)}, id="file-129"),
        pytest.param({"hlen": 17}, id="hlen-17"),
        pytest.param({"xid": 2**32}, id="xid-overflow"),
        pytest.param({"secs": -1}, id="secs-negative"),
        pytest.param({"options": {52: b"\x01"}}, id="option-52"),
        pytest.param({"options": {0: b""}}, id="option-0"),
        pytest.param({"options": {255: b""}}, id="option-255"),
        pytest.param({"options": {12: "host"}}, id="str-value"),
    ],
)
def test_encode_refuses_bad_fields(changes: dict[str, object]) -> None:
    from dataclasses import replace

    with pytest.raises(EncodeError):
        encode(replace(BAD, **changes))  # type: ignore[arg-type]


# -- wire compatibility with dpkt's header parsing --------------------------------------------


@pytest.mark.parametrize(
    "wire", [UDHCPC_DISCOVER, RELAYED_REQUEST, encode(REPLY)], ids=["discover", "relayed", "reply"]
)
def test_dpkt_reads_what_we_read(wire: bytes) -> None:
    theirs = dpkt.dhcp.DHCP(wire)
    ours = decode(wire)
    assert (theirs.op, theirs.hrd, theirs.hln, theirs.hops) == (
        ours.op,
        ours.htype,
        ours.hlen,
        ours.hops,
    )
    assert (theirs.xid, theirs.secs, theirs.flags) == (ours.xid, ours.secs, ours.flags)
    assert [
        IPv4Address(a) for a in (theirs.ciaddr, theirs.yiaddr, theirs.siaddr, theirs.giaddr)
    ] == [
        ours.ciaddr,
        ours.yiaddr,
        ours.siaddr,
        ours.giaddr,
    ]
    assert theirs.chaddr == ours.hardware_address
    assert theirs.magic == 0x63825363
    assert dict(theirs.opts) == dict(ours.options)
    assert [code for code, _ in theirs.opts] == list(ours.options)


def test_we_read_what_dpkt_writes() -> None:
    pkt = dpkt.dhcp.DHCP(
        op=dpkt.dhcp.DHCP_OP_REQUEST,
        xid=0xABCDEF01,
        chaddr=MAC,
        ciaddr=int(IPv4Address("10.0.0.9")),
        opts=[(53, b"\x03"), (61, b"\x01" + MAC), (12, b"dpkt")],
    )
    ours = decode(bytes(pkt))
    assert ours.op is Op.BOOTREQUEST
    assert ours.xid == 0xABCDEF01
    assert ours.ciaddr == IPv4Address("10.0.0.9")
    assert ours.hardware_address == MAC
    assert ours.options == {53: b"\x03", 61: b"\x01" + MAC, 12: b"dpkt"}


def test_encode_splits_a_long_option_across_areas_when_overloading() -> None:
    value = bytes(i % 253 for i in range(400))
    msg = Message(op=Op.BOOTREPLY, xid=1, chaddr=CHADDR16, options={53: b"\x02", 43: value})
    wire = encode(msg)
    assert len(wire) <= 548
    # 255 + 42 bytes fill the options area (304 usable), the last 103 go to `file`.
    assert wire[246:503] == opt(43, value[:255])
    assert wire[503:547] == opt(43, value[255:297])
    assert wire[108 : 108 + 105] == opt(43, value[297:])
    assert decode(wire) == msg
