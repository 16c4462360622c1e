"""Scope documents as stored in etcd: encoding, parsing, set validation, the served set."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubspoke.config import ConfigError
from hubspoke.etcd.records import KeyValue
from hubspoke.keys import KeyError_, Keys
from hubspoke.scopes.parse import default_option_codec, parse_scope
from hubspoke.scopes.store import (
    StoredScope,
    decode_scope_doc,
    effective_scopes,
    encode_scope_doc,
    parse_scope_doc,
    stored_scope,
    validate_scope_set,
)

KEYS = Keys("/t/v1")


def lan(**over: object) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "lan",
        "subnet": "10.0.0.0/24",
        "pools": ["10.0.0.100-10.0.0.199"],
        "lease_time": 3600,
        "options": {"routers": ["10.0.0.1"], "dns_servers": ["10.0.0.53"], 224: {"hex": "01ff"}},
        "reservations": [{"hw_address": "02:00:00:00:00:01", "ip": "10.0.0.50"}],
    }
    doc.update(over)
    return doc


def branch(**over: object) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "branch",
        "subnet": "10.1.0.0/22",
        "pools": ["10.1.0.10-10.1.1.255"],
    }
    doc.update(over)
    return doc


def test_round_trip_equals_the_yaml_parser() -> None:
    raw = encode_scope_doc(lan())
    assert json.loads(raw)["v"] == 1
    assert parse_scope_doc(raw, "lan") == parse_scope(lan(), "s", default_option_codec())


def test_encoding_is_deterministic_and_compact() -> None:
    a = encode_scope_doc(lan())
    b = encode_scope_doc(dict(reversed(list(lan().items()))))
    assert a == b
    assert b" " not in a.replace(b"10.0.0.0/24", b"")


def test_interfaces_are_optional_in_a_stored_scope() -> None:
    scope = parse_scope_doc(encode_scope_doc(branch()), "branch")
    assert scope.interfaces == ()
    assert scope.subnet == IPv4Network("10.1.0.0/22")
    named = parse_scope_doc(encode_scope_doc(branch(interfaces=["eth1"])), "branch")
    assert named.interfaces == ("eth1",)


def test_option_values_survive_json() -> None:
    scope = parse_scope_doc(encode_scope_doc(lan()), "lan")
    assert scope.options[3] == IPv4Address("10.0.0.1").packed
    assert scope.options[224] == b"\x01\xff"


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"name": "lan", "subnet": IPv4Network("10.0.0.0/24")}, "scopes[lan].subnet"),
        ({"name": "lan", "pools": [b"10.0.0.1"]}, "scopes[lan].pools[0]"),
        ({"name": "lan", "options": {True: "x"}}, "scopes[lan].options.True"),
        ({"name": "lan", "lease_time": float("nan")}, "scopes[lan]"),
        ({"name": 5, "lease_time": float("inf")}, "scope"),
    ],
)
def test_encode_refuses_non_json_values(doc: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError, match="not plain JSON data") as exc:
        encode_scope_doc(doc)
    assert exc.value.path == path


BAD_RAW = [
    (b"{not json", "scopes[lan]", "not JSON"),
    (b"\xff\xfe", "scopes[lan]", "not JSON"),
    (b'{"v":2,"scope":{}}', "scopes[lan]", "unsupported stored scope version"),
    (b"[1,2]", "scopes[lan]", "unsupported stored scope version"),
    (b'{"v":1}', "scopes[lan]", "no scope mapping"),
    (b'{"v":1,"scope":[]}', "scopes[lan]", "no scope mapping"),
]


@pytest.mark.parametrize(("raw", "path", "reason"), BAD_RAW)
def test_unreadable_values_are_refused(raw: bytes, path: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as exc:
        parse_scope_doc(raw, "lan")
    assert exc.value.path == path
    with pytest.raises(ConfigError):
        decode_scope_doc(raw, "lan")


BAD_DOCS: list[tuple[dict[str, Any], str, str]] = [
    (lan(name="other"), "scopes[lan].name", "differs from the key's 'lan'"),
    (lan(pools=["10.0.1.1-10.0.1.9"]), "scopes[lan].pools[0]", "not inside subnet"),
    (lan(lease_time=0), "scopes[lan].lease_time", ">= 1"),
    (lan(options={"lease_time": 60}), "scopes[lan].options.lease_time", "set by the server"),
    (lan(options={"dns_servers": "10.0.0.300"}), "scopes[lan].options.dns_servers", "10.0.0.300"),
    (lan(leasetime=5), "scopes[lan].leasetime", "unknown key"),
    (lan(subnet=None), "scopes[lan].subnet", "required"),
    (lan(reservations=[{"ip": "10.0.0.150", "hw_address": "02:00:00:00:00:01"}]),
     "scopes[lan].reservations[0]", "inside pool"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "path", "reason"), BAD_DOCS)
def test_bad_documents_name_the_field(doc: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as exc:
        parse_scope_doc(encode_scope_doc(doc), "lan")
    assert exc.value.path == path


def test_a_valid_set_comes_back_sorted_by_name() -> None:
    scopes = validate_scope_set({"lan": lan(), "branch": branch()})
    assert [s.name for s in scopes] == ["branch", "lan"]


SET_ERRORS: list[tuple[dict[str, dict[str, Any]], str, str]] = [
    (
        {"lan": lan(), "wide": branch(name="wide", subnet="10.0.0.0/16", pools=["10.0.5.1"])},
        "scopes[wide].subnet",
        "overlaps scopes[lan].subnet 10.0.0.0/24",
    ),
    (
        {"lan": lan(), "lan2": lan(name="lan2", reservations=[])},
        "scopes[lan2].pools[0]",
        "overlaps scopes[lan].pools[0]",
    ),
    (
        {
            "lan": lan(relay_addresses=["192.0.2.1"]),
            "branch": branch(relay_addresses=["192.0.2.1"]),
        },
        "scopes[lan].relay_addresses[0]",
        "already selects scopes[branch].relay_addresses[0]",
    ),
    (
        {"lan": lan(interfaces=["eth0"]), "branch": branch(interfaces=["eth0"])},
        "scopes[lan].interfaces[0]",
        "already claimed by scopes[branch].interfaces[0]",
    ),
    ({"lan": lan(), "wan": branch()}, "scopes[wan].name", "differs from the key's 'wan'"),
]


@pytest.mark.parametrize(("docs", "path", "reason"), SET_ERRORS)
def test_set_errors_name_scopes_not_positions(
    docs: dict[str, dict[str, Any]], path: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_scope_set(docs)
    assert exc.value.path == path
    assert reason in exc.value.reason


def kv(name: str, raw: bytes, created: int, modified: int | None = None) -> KeyValue:
    return KeyValue(KEYS.scope(name), raw, created, modified or created, 1, 0)


def entry(doc: dict[str, Any], created: int) -> StoredScope:
    return stored_scope(KEYS, kv(str(doc["name"]), encode_scope_doc(doc), created))


def test_stored_scope_parses_once_and_keeps_errors() -> None:
    good = entry(lan(), 5)
    assert not isinstance(good.parsed, ConfigError) and good.parsed.name == "lan"
    assert (good.create_revision, good.mod_revision) == (5, 5)
    bad = stored_scope(KEYS, kv("lan", b"junk", 7))
    assert isinstance(bad.parsed, ConfigError) and bad.parsed.path == "scopes[lan]"
    with pytest.raises(KeyError_):
        stored_scope(KEYS, KeyValue(b"/t/v1/leases/x", b"", 1, 1, 1, 0))


def test_effective_scopes_skip_invalid_documents() -> None:
    served, refused = effective_scopes(
        [entry(lan(), 3), stored_scope(KEYS, kv("junk", b"{}", 4)), entry(branch(), 5)]
    )
    assert [s.name for s in served] == ["branch", "lan"]
    assert set(refused) == {"junk"}


@pytest.mark.parametrize("first_created", ["lan", "wide"])
def test_on_conflict_the_earlier_created_scope_wins(first_created: str) -> None:
    wide = branch(name="wide", subnet="10.0.0.0/16", pools=["10.0.5.1-10.0.5.9"])
    lan_rev, wide_rev = (3, 9) if first_created == "lan" else (9, 3)
    served, refused = effective_scopes(
        [
            entry(branch(subnet="10.2.0.0/22", pools=["10.2.0.1"]), 1),
            entry(lan(), lan_rev),
            entry(wide, wide_rev),
        ]
    )
    loser = "wide" if first_created == "lan" else "lan"
    assert sorted(s.name for s in served) == sorted({"branch", first_created})
    assert set(refused) == {loser}
    assert "overlaps" in refused[loser].reason


def test_effective_scopes_of_nothing() -> None:
    assert effective_scopes([]) == ((), {})


@given(
    lease=st.integers(1, 10**6),
    first=st.integers(1, 200),
    count=st.integers(1, 50),
    dns=st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=4),
)
def test_round_trip_property(lease: int, first: int, count: int, dns: list[str]) -> None:
    doc = {
        "name": "p",
        "subnet": "10.7.0.0/24",
        "pools": [f"10.7.0.{first}-10.7.0.{min(first + count, 254)}"],
        "lease_time": lease,
        "max_lease_time": max(lease, 7200),
        "min_lease_time": 1,
        "options": {"dns_servers": dns},
    }
    scope = parse_scope_doc(encode_scope_doc(doc), "p")
    assert scope == parse_scope(doc, "p", default_option_codec())
    assert scope.options[6] == b"".join(IPv4Address(a).packed for a in dns)
