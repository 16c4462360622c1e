"""The option table, the config-facing encoder, typed decoders and relay agent information."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubspoke.dhcp.errors import DecodeError, Reason
from hubspoke.dhcp.option_values import Route
from hubspoke.dhcp.options import (
    OPTION_NAMES,
    OPTIONS,
    SERVER_OWNED,
    Kind,
    OptionValueError,
    RelaySubOpt,
    build_relay_agent_info,
    check_config_option,
    decode_option_value,
    encode_option_value,
    option_code,
    option_name,
    parse_relay_agent_info,
    relay_sub_option,
)

ENCODE_CASES = [
    (1, "255.255.255.0", bytes((255, 255, 255, 0))),
    (1, IPv4Address("255.255.0.0"), bytes((255, 255, 0, 0))),
    (2, -3600, (-3600).to_bytes(4, "big", signed=True)),
    (3, ["10.0.0.1", "10.0.0.2"], bytes((10, 0, 0, 1, 10, 0, 0, 2))),
    (6, "10.0.0.53", bytes((10, 0, 0, 53))),  # a single address stands for a list of one
    (12, "node-a", b"node-a"),
    (15, "example.org", b"example.org"),
    (19, False, b"\x00"),
    (23, 64, b"\x40"),
    (26, 1500, b"\x05\xdc"),
    (28, "10.0.0.255", bytes((10, 0, 0, 255))),
    (42, ("10.0.0.1",), bytes((10, 0, 0, 1))),
    (44, ["10.0.0.3"], bytes((10, 0, 0, 3))),
    (51, 86400, (86400).to_bytes(4, "big")),
    (58, 43200, (43200).to_bytes(4, "big")),
    (59, 75600, (75600).to_bytes(4, "big")),
    (66, "tftp.example.org", b"tftp.example.org"),
    (67, "pxelinux.0", b"pxelinux.0"),
    # RFC 3397 section 2's example, without compression
    (
        119,
        ["eng.apple.com.", "marketing.apple.com"],
        b"\x03eng\x05apple\x03com\x00\x09marketing\x05apple\x03com\x00",
    ),
    # RFC 3442 section 2's table of encodings, plus a router
    (
        121,
        [
            {"destination": "0.0.0.0/0", "router": "10.0.0.1"},
            {"destination": "10.0.0.0/8", "router": "10.0.0.2"},
            {"destination": "10.17.0.0/16", "router": "10.0.0.3"},
            {"destination": "10.27.129.0/24", "router": "10.0.0.4"},
            {"destination": "10.229.0.128/25", "router": "10.0.0.5"},
            {"destination": "10.198.122.47/32", "router": "10.0.0.6"},
        ],
        bytes((0, 10, 0, 0, 1))
        + bytes((8, 10, 10, 0, 0, 2))
        + bytes((16, 10, 17, 10, 0, 0, 3))
        + bytes((24, 10, 27, 129, 10, 0, 0, 4))
        + bytes((25, 10, 229, 0, 128, 10, 0, 0, 5))
        + bytes((32, 10, 198, 122, 47, 10, 0, 0, 6)),
    ),
    (224, {"hex": "0a0b"}, b"\x0a\x0b"),  # unknown code: raw bytes only
    (224, {"hex": "0a:0b 0c"}, b"\x0a\x0b\x0c"),
    (224, b"\x01\x02", b"\x01\x02"),
    (43, {"hex": "0104deadbeef"}, bytes.fromhex("0104deadbeef")),
    (6, {"hex": "0a000001"}, bytes((10, 0, 0, 1))),  # raw override for a known code
]


@pytest.mark.parametrize(("code", "value", "wire"), ENCODE_CASES)
def test_encode_option_value(code: int, value: object, wire: bytes) -> None:
    assert encode_option_value(code, value) == wire


ERROR_CASES = [
    (6, ["1.2.3"], "option 6 (dns-servers): '1.2.3' is not an IPv4 address"),
    (6, [], "option 6 (dns-servers): empty list"),
    (6, 7, "option 6 (dns-servers): 7 is not a list"),
    (1, "255.255.255.256", "option 1 (subnet-mask): '255.255.255.256' is not an IPv4 address"),
    (26, 70000, "option 26 (interface-mtu): 70000 is outside 0..65535"),
    (26, "1500", "option 26 (interface-mtu): '1500' is not an integer"),
    (26, True, "option 26 (interface-mtu): True is not an integer"),
    (2, 2**31, "option 2 (time-offset): 2147483648 is outside -2147483648..2147483647"),
    (19, 1, "option 19 (ip-forwarding): 1 is not true or false"),
    (12, "", "option 12 (hostname): empty string"),
    (15, "exämple.org", "option 15 (domain-name): 'exämple.org' is not ASCII"),
    (12, 5, "option 12 (hostname): 5 is not a string"),
    (119, ["a..b"], "option 119 (domain-search): 'a..b' has a label that is empty"),
    (119, ["x" * 64 + ".org"], "has a label that is empty or longer than 63"),
    (121, [{"destination": "10.0.0.1/8", "router": "10.0.0.1"}], "without host bits"),
    (121, [{"destination": "10.0.0.0", "router": "10.0.0.1"}], "a.b.c.d/n"),
    (121, [{"destination": "10.0.0.0/8"}], "is not {destination"),
    (121, [], "is not a non-empty list of routes"),
    (224, "0a0b", 'option 224 (option-224): \'0a0b\' is neither bytes nor {"hex": "..."}'),
    (224, {"hex": "zz"}, "option 224 (option-224): 'zz' is not hexadecimal"),
    (300, b"", "option code 300 is outside 0..255"),
]


@pytest.mark.parametrize(("code", "value", "message"), ERROR_CASES)
def test_encode_option_value_errors(code: int, value: object, message: str) -> None:
    with pytest.raises(OptionValueError) as info:
        encode_option_value(code, value)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("key", "code"), [("dns-servers", 6), (6, 6), ("option-224", 224), ("routers", 3)]
)
def test_option_code(key: str | int, code: int) -> None:
    assert option_code(key) == code


@pytest.mark.parametrize("key", ["dns", "option-", "option-256", 256, -1])
def test_option_code_unknown(key: str | int) -> None:
    with pytest.raises(OptionValueError):
        option_code(key)


def test_option_name() -> None:
    assert option_name(6) == "dns-servers"
    assert option_name(121) == "classless-static-routes"
    assert option_name(224) == "option-224"


def test_table_is_consistent_and_read_only() -> None:
    names = [spec.name for spec in OPTIONS.values()]
    assert len(names) == len(set(names))
    assert all(code == spec.code for code, spec in OPTIONS.items())
    with pytest.raises(TypeError):
        OPTIONS[7] = OPTIONS[6]  # type: ignore[index]


@pytest.mark.parametrize("code", [0, 50, 51, 52, 53, 54, 55, 57, 58, 59, 61, 82, 255])
def test_server_owned_codes_are_refused_in_config(code: int) -> None:
    assert code in SERVER_OWNED
    with pytest.raises(OptionValueError, match=f"option {code} .* cannot be configured"):
        check_config_option(code, {"hex": "00"})


def test_lease_timers_point_to_the_scope_fields() -> None:
    with pytest.raises(OptionValueError, match="lease time fields"):
        check_config_option("renewal-time", 100)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("dns-servers", ["10.0.0.53"], (6, bytes((10, 0, 0, 53)))),
        ("domain-search", "example.org", (119, b"\x07example\x03org\x00")),
        (224, {"hex": "ff"}, (224, b"\xff")),
    ],
)
def test_check_config_option(key: str | int, value: object, expected: tuple[int, bytes]) -> None:
    assert check_config_option(key, value) == expected


# -- typed decoders ---------------------------------------------------------------------------

DECODE_CASES = [
    (1, bytes((255, 255, 255, 0)), IPv4Address("255.255.255.0")),
    (6, bytes((10, 0, 0, 1, 10, 0, 0, 2)), (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))),
    (2, b"\xff\xff\xf1\xf0", -3600),
    (26, b"\x05\xdc", 1500),
    (51, (86400).to_bytes(4, "big"), 86400),
    (12, b"node-a\x00", "node-a"),
    (19, b"\x01", True),
    (224, b"\x01", b"\x01"),
    (
        119,  # RFC 3397 section 2's compressed example
        b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04",
        ("eng.apple.com", "marketing.apple.com"),
    ),
    (
        121,
        bytes([24, 192, 168, 5, 10, 0, 0, 1, 0, 10, 0, 0, 254]),
        (
            Route(IPv4Network("192.168.5.0/24"), IPv4Address("10.0.0.1")),
            Route(IPv4Network("0.0.0.0/0"), IPv4Address("10.0.0.254")),
        ),
    ),
]


@pytest.mark.parametrize(("code", "raw", "value"), DECODE_CASES)
def test_decode_option_value(code: int, raw: bytes, value: object) -> None:
    assert decode_option_value(code, raw) == value


@pytest.mark.parametrize(
    ("code", "raw"),
    [
        (1, b"\x01\x02\x03"),
        (6, b""),
        (6, bytes(5)),
        (26, b"\x05"),
        (19, b"\x02"),
        (12, "é".encode()),
        (119, b"\x03ab"),  # label past the end
        (119, b"\xc0\x00"),  # pointer to itself
        (119, b"\xc0"),  # truncated pointer
        (121, bytes([33, 1, 2, 3, 4, 5, 10, 0, 0, 1])),  # width over 32
        (121, bytes([8, 10, 10, 0, 0])),  # router cut short
        (121, bytes([8, 10, 10, 0, 0, 1]) + b"\x18"),  # trailing garbage
    ],
)
def test_decode_option_value_errors(code: int, raw: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_option_value(code, raw)
    assert info.value.reason == Reason.BAD_OPTION_VALUE


ip_text = st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n)))
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(st.lists(ip_text, min_size=1, max_size=20))
def test_ip_list_round_trip(ips: list[str]) -> None:
    raw = encode_option_value(6, ips)
    assert decode_option_value(6, raw) == tuple(IPv4Address(a) for a in ips)


@given(st.integers(0, 2**32 - 1), st.integers(-(2**31), 2**31 - 1))
def test_integer_round_trip(u32: int, i32: int) -> None:
    assert decode_option_value(51, encode_option_value(51, u32)) == u32
    assert decode_option_value(2, encode_option_value(2, i32)) == i32


@given(st.lists(st.lists(label, min_size=1, max_size=4).map(".".join), min_size=1, max_size=6))
def test_domain_search_round_trip(names: list[str]) -> None:
    assert decode_option_value(119, encode_option_value(119, names)) == tuple(names)


@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), ip_text).map(
            lambda t: {
                "destination": str(IPv4Network((t[0], t[1]), strict=False)),
                "router": t[2],
            }
        ),
        min_size=1,
        max_size=8,
    )
)
def test_classless_routes_round_trip(routes: list[dict[str, str]]) -> None:
    decoded = decode_option_value(121, encode_option_value(121, routes))
    assert decoded == tuple(
        Route(IPv4Network(r["destination"]), IPv4Address(r["router"])) for r in routes
    )


@settings(max_examples=300)
@given(st.sampled_from(sorted(OPTIONS)), st.binary(max_size=40))
def test_typed_decoders_raise_only_decode_error(code: int, raw: bytes) -> None:
    try:
        decode_option_value(code, raw)
    except DecodeError as exc:
        assert exc.reason == Reason.BAD_OPTION_VALUE


def test_every_kind_is_used() -> None:
    assert {spec.kind for spec in OPTIONS.values()} == set(Kind)


# -- relay agent information (RFC 3046) -------------------------------------------------------


def test_parse_relay_agent_info() -> None:
    raw = b"\x01\x08eth0/1/3\x02\x06\x02\x00\x5e\x00\x00\xa1"
    subs = parse_relay_agent_info(raw)
    assert subs == ((1, b"eth0/1/3"), (2, bytes.fromhex("02005e0000a1")))
    assert relay_sub_option(subs, RelaySubOpt.CIRCUIT_ID) == b"eth0/1/3"
    assert relay_sub_option(subs, RelaySubOpt.REMOTE_ID) == bytes.fromhex("02005e0000a1")
    assert relay_sub_option(subs, RelaySubOpt.LINK_SELECTION) is None
    assert build_relay_agent_info(subs) == raw


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x01\x05abc", b"\x01\x01a\x02"])
def test_parse_relay_agent_info_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        parse_relay_agent_info(raw)
    assert info.value.reason == Reason.BAD_RELAY_INFO


@pytest.mark.parametrize("subs", [[], [(1, bytes(256))], [(256, b"x")]])
def test_build_relay_agent_info_errors(subs: list[tuple[int, bytes]]) -> None:
    with pytest.raises(ValueError):
        build_relay_agent_info(subs)


sub_options = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=255)), min_size=1)


@given(sub_options)
def test_relay_agent_info_round_trip(subs: list[tuple[int, bytes]]) -> None:
    assert parse_relay_agent_info(build_relay_agent_info(subs)) == tuple(subs)


@given(st.binary(max_size=300))
def test_relay_agent_info_random_bytes(raw: bytes) -> None:
    try:
        subs = parse_relay_agent_info(raw)
    except DecodeError as exc:
        assert exc.reason == Reason.BAD_RELAY_INFO
    else:
        assert build_relay_agent_info(subs) == raw


def test_name_map_matches_the_table() -> None:
    assert OPTION_NAMES["dns-servers"] == 6
    assert {OPTIONS[code].name for code in OPTION_NAMES.values()} == set(OPTION_NAMES)
