"""Hostile input (issue 12, points 2 and 3): linear decoding with a bound on option instances,
bounded client identifiers and hostnames, replies that cannot be encoded dropped with a reason
(before anything is held or written), capped binding values, journal lines and span attributes."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hubspoke.model import Binding, BindingState
from hubspoke.values import (
    MAX_BINDING_VALUE,
    ValueFormatError,
    ValueTooLarge,
    decode_binding,
    encode_binding,
    sanitize_hostname,
)
from spoke.dhcp.codec import MAX_OPTION_INSTANCES, DecodeError, Reason, decode, encode, fits
from spoke.dhcp.decisions import Commit, Drop, Reply
from spoke.dhcp.message import ZERO, Message, MessageType, Op, Opt
from spoke.dhcp.reply import Destination, DestKind, Outgoing
from spoke.exchange import Wire
from spoke.failover.journal import MAX_LINE, decode_line, encode_line
from spoke.telemetry import ATTR_CLIENT, MAX_ATTRIBUTE, DhcpTracer
from tests.lab.bindingwrites import write
from tests.lab.codec_packets import header, opt, pad300
from tests.lab.scripted_client import LAN, ScriptedClient, Server, mac, site_scopes

NOW = 1_700_000_000.0


# -- decoding: joined once, bounded work ------------------------------------------------------


def test_many_parts_of_one_option_are_joined_in_order() -> None:
    value = bytes(range(200))
    data = header() + opt(53, b"\x01") + b"".join(opt(61, bytes([b])) for b in value) + b"\xff"
    assert decode(data).options[Opt.CLIENT_ID] == value


def test_parts_in_the_options_area_and_file_are_joined_in_order() -> None:
    file = (opt(12, b"cd") + opt(12, b"ef") + b"\xff").ljust(128, b"\0")
    data = pad300(
        header(file=file) + opt(53, b"\x01") + opt(52, b"\x01") + opt(12, b"a") + opt(12, b"b")
    )
    assert decode(data).options[Opt.HOSTNAME] == b"abcdef"


def test_more_option_instances_than_the_bound_are_refused() -> None:
    ok = header() + opt(53, b"\x01") + opt(61, b"\x01") * (MAX_OPTION_INSTANCES - 1) + b"\xff"
    assert len(decode(ok).options[Opt.CLIENT_ID]) == MAX_OPTION_INSTANCES - 1
    hostile = header() + opt(53, b"\x01") + opt(61, b"\x01") * 1280 + b"\xff"
    with pytest.raises(DecodeError) as e:
        decode(hostile)
    assert e.value.reason is Reason.TOO_MANY_OPTIONS


def test_a_long_run_of_pad_is_skipped() -> None:
    data = header() + bytes(1000) + opt(53, b"\x01") + bytes(2000) + opt(12, b"x") + bytes(800)
    m = decode(data)
    assert m.message_type is MessageType.DISCOVER and m.options[Opt.HOSTNAME] == b"x"


@pytest.mark.parametrize(
    "sizes", [(10,), (255,), (255, 255), (255, 200, 100), (300,), (600,), (255, 255, 255)]
)
def test_fits_agrees_with_encode(sizes: tuple[int, ...]) -> None:
    opts = {Opt.MESSAGE_TYPE: b"\x02", **{100 + k: bytes(n) for k, n in enumerate(sizes)}}
    msg = Message(Op.BOOTREPLY, 1, mac(1).ljust(16, b"\0"), options=opts)
    try:
        encode(msg)
        encodable = True
    except Exception:
        encodable = False
    assert fits(msg) is encodable


# -- bounded identities and names --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (b"laptop", "laptop"),
        (b"My PC\x00", "MyPC"),
        (b"\xff" * 3700, None),
        (b"a..b.", "a.b"),
        (b"x" * 70 + b".y", "x" * 63 + ".y"),
        (b"\x1b[31mred", "31mred"),
    ],
)
def test_hostnames_are_stored_sanitized(raw: bytes, stored: str | None) -> None:
    m = Message(Op.BOOTREQUEST, 1, mac(1), options={Opt.HOSTNAME: raw})
    assert m.hostname == stored


def test_hostname_is_capped_at_253() -> None:
    name = sanitize_hostname(("x" * 63 + ".") * 10)
    assert name is not None and len(name) <= 253 and all(len(p) <= 63 for p in name.split("."))


def test_a_huge_hostname_makes_a_small_binding() -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1))
    server.talk(c, c.discover(), LAN, NOW)
    req = c.select()
    hostile = replace(req, options={**req.options, Opt.HOSTNAME: b"\xff" * 3700})
    ex = server.handle(hostile, LAN, NOW + 1)
    assert isinstance(ex.decision, Commit) and ex.committed
    b = ex.decision.write.binding
    assert b.hostname is None and len(encode_binding(b)) < 300


def _binding(**kw: object) -> Binding:
    b = Binding(
        "lan",
        IPv4Address("10.0.0.5"),
        BindingState.BOUND,
        b"\x01\x01" + mac(1),
        mac(1),
        1.0,
        2.0,
        "s1",
    )
    return replace(b, **kw)  # type: ignore[arg-type]


def test_binding_values_are_capped() -> None:
    b = _binding(hostname="\ufffd" * 3700)  # what the old decoder stored
    assert "hostname" not in json.loads(encode_binding(b))
    longest = _binding(client_key=b"\x00" + bytes(255), hostname="h" * 63 + "." + "i" * 63)
    raw = encode_binding(longest)
    assert len(raw) <= MAX_BINDING_VALUE and decode_binding(raw) == longest
    with pytest.raises(ValueTooLarge):
        encode_binding(_binding(client_key=bytes(600)))


def test_an_old_oversized_hostname_is_sanitized_when_read() -> None:
    d = json.loads(encode_binding(_binding()))
    d["hostname"] = "\ufffd" * 3700
    assert decode_binding(json.dumps(d).encode()).hostname is None


@pytest.mark.parametrize("cid", [b"\x01", b"\x00" + bytes(255)])
def test_client_ids_outside_rfc_2132_are_refused(cid: bytes) -> None:
    server = Server(site_scopes())
    c = ScriptedClient(mac(1), client_id=cid)
    ex = server.handle(c.discover(), LAN, NOW)
    assert ex.decision == Drop("bad-client-id") and ex.sent is None


def test_no_hardware_address_needs_a_client_id() -> None:
    server = Server(site_scopes())
    for n in (1, 2):
        anon = replace(ScriptedClient(mac(n)).discover(), hlen=0)
        assert server.handle(anon, LAN, NOW).decision == Drop("no-client-identity")
    c = ScriptedClient(mac(3), client_id=b"\x00ib-port-1")
    named = replace(c.discover(), hlen=0)
    assert isinstance(server.handle(named, LAN, NOW).decision, Reply)


# -- replies that cannot be encoded ---------------------------------------------------------


def _unencodable(n: int) -> ScriptedClient:
    """RFC 6842 and 3046: both echoed unaltered; 255 + 255 bytes do not fit in 576."""
    return ScriptedClient(
        mac(n), client_id=b"\x00" + bytes(254), relay_info=b"\x01\xfd" + bytes(253)
    )


def test_an_offer_that_cannot_be_encoded_holds_no_address() -> None:
    server = Server(site_scopes())
    c = _unencodable(1)
    ex = server.handle(c.discover(), LAN, NOW)
    assert ex.decision == Drop("reply-too-large") and ex.sent is None
    assert server.table.offer_for("lan", c.discover().client_key, NOW) is None


def test_a_request_whose_ack_cannot_be_encoded_writes_nothing() -> None:
    server = Server(site_scopes())
    c = _unencodable(2)
    c.offer = Message(
        Op.BOOTREPLY,
        1,
        mac(2),
        yiaddr=IPv4Address("10.0.0.100"),
        options={Opt.SERVER_ID: LAN.server_ip.packed, Opt.MESSAGE_TYPE: b"\x02"},
    )
    ex = server.handle(c.select(), LAN, NOW)
    assert ex.decision == Drop("reply-too-large") and not ex.committed
    assert server.table.get("lan", IPv4Address("10.0.0.100")) is None


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.on_drop = None

    def send(self, payload: bytes, dest: Destination, interface: str) -> None:
        self.sent.append(payload)


class _Tally:
    def __init__(self) -> None:
        self.drops: list[str] = []
        self.out: list[str] = []

    def decided(self, d: object) -> None:
        assert isinstance(d, Drop)
        self.drops.append(d.reason)

    def packet_out(self, kind: str) -> None:
        self.out.append(kind)


def test_wire_drops_an_unencodable_ack_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, tally = _Transport(), _Tally()
    wire = Wire(transport, tally)  # type: ignore[arg-type]
    assert transport.on_drop is not None
    big = {Opt.MESSAGE_TYPE: bytes([MessageType.ACK]), Opt.CLIENT_ID: bytes(255), 82: bytes(255)}
    ack = Message(Op.BOOTREPLY, 7, mac(1), yiaddr=IPv4Address("10.0.0.9"), options=big)
    dest = Destination(DestKind.BROADCAST, IPv4Address("255.255.255.255"), 68)
    with caplog.at_level(logging.WARNING, logger="hubspoke.spoke"):
        for _ in range(50):
            wire.send(Outgoing(ack, dest, "eth0"))
        offer = replace(ack, yiaddr=ZERO, options={**big, Opt.MESSAGE_TYPE: b"\x02"})
        wire.send(Outgoing(offer, dest, "eth0"))
    assert tally.drops == ["ack-too-large"] * 50 + ["reply-too-large"]
    assert not transport.sent and not tally.out
    lines = [r for r in caplog.records if r.getMessage() == "dhcp.reply_too_large"]
    assert len(lines) == 2 and all(r.exc_info is None for r in lines)
    transport.on_drop("truncated")
    assert tally.drops[-1] == "truncated"


# -- journal lines and span attributes -----------------------------------------------------


def test_journal_lines_are_capped() -> None:
    w = write(1)
    assert len(encode_line(w)) <= MAX_LINE
    huge = replace(w, binding=replace(w.binding, client_key=bytes(600)))
    with pytest.raises(ValueTooLarge):
        encode_line(huge)
    with pytest.raises(ValueFormatError):
        decode_line(b"{" + b" " * MAX_LINE + b"}", 0)


def test_span_attributes_are_capped() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    txn = DhcpTracer(provider).transaction(MessageType.DISCOVER, 1, b"\x00" + bytes(255))
    txn.end("drop", "r" * 1000)
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert all(len(str(v)) <= MAX_ATTRIBUTE for v in span.attributes.values())
    assert str(span.attributes[ATTR_CLIENT]).startswith("00" * 10)
