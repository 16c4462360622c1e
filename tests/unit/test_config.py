"""Spoke configuration: every refusal names its field path and reason; a good file parses whole."""

from __future__ import annotations

import copy
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubspoke.config import ConfigError
from hubspoke.etcd.transport import EtcdConfig as EtcdClientConfig
from hubspoke.model import Pool, Reservation
from hubspoke.scopes.parse import OptionCodec
from spoke.config import (
    DhcpConfig,
    EtcdConfig,
    LogConfig,
    MetricsConfig,
    TracingConfig,
    load_config,
    parse_config,
)


def _fake_encode(code: int, value: object) -> bytes:
    """A stand-in encoder: address lists, text and small integers; anything else is refused."""
    if isinstance(value, list):
        return b"".join(IPv4Address(str(v)).packed for v in value)
    if isinstance(value, str):
        return value.encode("ascii")
    if isinstance(value, int) and not isinstance(value, bool):
        return value.to_bytes(1, "big")
    raise ValueError(f"cannot encode {type(value).__name__} for option {code}")


CODEC = OptionCodec(
    encode=_fake_encode,
    server_owned=frozenset({1, 51, 53, 54, 58, 59, 82}),
    names={"routers": 3, "time-servers": 4, "dns-servers": 6, "domain-name": 15, "ntp-servers": 42},
)


def good() -> dict[str, Any]:
    return {
        "node": "spoke-1",
        "etcd": {"endpoints": ["127.0.0.1:2379", "[::1]:2379"], "root": "/hubspoke/v1"},
        "dhcp": {"interfaces": ["eth0", "eth1"], "port": 1067, "client_port": 1068},
        "metrics": {"listen": "127.0.0.1:0"},
        "tracing": {"otlp_endpoint": "127.0.0.1:4317", "sample_ratio": 0.5},
        "log": {"level": "debug", "format": "text"},
        "scopes": [
            {
                "name": "lan",
                "subnet": "10.0.0.0/24",
                "pools": ["10.0.0.100-10.0.0.199", "10.0.0.210"],
                "lease_time": 3600,
                "max_lease_time": 7200,
                "min_lease_time": 60,
                "t1": 1800,
                "t2": 3150,
                "interfaces": ["eth0"],
                "relay_addresses": ["192.0.2.1"],
                "options": {
                    "routers": ["10.0.0.1"],
                    "domain_name": "example.net",
                    42: ["10.0.0.1"],
                },
                "reservations": [
                    {"hw_address": "02:00:00:00:00:01", "ip": "10.0.0.50", "hostname": "printer"},
                    {"client_id": "01-02-00-00-00-00-02", "ip": "10.0.0.51"},
                ],
            },
            {"name": "wan", "subnet": "10.1.0.0/16", "pools": ["10.1.0.10-10.1.255.200"]},
        ],
    }


def test_good_config_parses_into_typed_objects() -> None:
    cfg = parse_config(good(), CODEC)
    assert cfg.node == "spoke-1"
    assert cfg.etcd == EtcdConfig(
        EtcdClientConfig(endpoints=("127.0.0.1:2379", "[::1]:2379")), root="/hubspoke/v1"
    )
    assert cfg.dhcp == DhcpConfig(interfaces=("eth0", "eth1"), port=1067, client_port=1068)
    assert cfg.metrics == MetricsConfig("127.0.0.1", 0)
    assert cfg.tracing == TracingConfig(otlp_endpoint="127.0.0.1:4317", sample_ratio=0.5)
    assert cfg.log == LogConfig(level="debug", format="text")
    lan, wan = cfg.scopes
    assert lan.name == "lan" and lan.subnet == IPv4Network("10.0.0.0/24")
    assert lan.pools == (
        Pool(IPv4Address("10.0.0.100"), IPv4Address("10.0.0.199")),
        Pool(IPv4Address("10.0.0.210"), IPv4Address("10.0.0.210")),
    )
    assert (lan.lease_time, lan.max_lease_time, lan.min_lease_time) == (3600, 7200, 60)
    assert (lan.t1, lan.t2) == (1800, 3150)
    assert lan.interfaces == ("eth0",)
    assert lan.relay_addresses == (IPv4Address("192.0.2.1"),)
    assert dict(lan.options) == {
        3: b"\x0a\x00\x00\x01",
        15: b"example.net",
        42: b"\x0a\x00\x00\x01",
    }
    assert lan.reservations == (
        Reservation(
            IPv4Address("10.0.0.50"), hw_address=bytes.fromhex("020000000001"), hostname="printer"
        ),
        Reservation(IPv4Address("10.0.0.51"), client_id=bytes.fromhex("01020000000002")),
    )
    assert wan.t1 is None and wan.t2 is None and wan.options == {} and wan.reservations == ()


def test_config_is_frozen_and_hides_the_password() -> None:
    data = good()
    data["etcd"].update(user="spoke", password="s3cret")
    cfg = parse_config(data, CODEC)
    with pytest.raises(AttributeError):
        cfg.node = "other"  # type: ignore[misc]
    assert "s3cret" not in repr(cfg)
    assert cfg.etcd.client.password == "s3cret"


def test_minimal_config_takes_defaults() -> None:
    cfg = parse_config({"node": "a", "dhcp": {"interfaces": ["eth0"]}}, CODEC)
    assert cfg.etcd == EtcdConfig()
    assert cfg.dhcp == DhcpConfig(interfaces=("eth0",))
    assert cfg.metrics == MetricsConfig("127.0.0.1", 9167)
    assert cfg.tracing == TracingConfig()
    assert cfg.log == LogConfig()
    assert cfg.scopes == ()


def test_metrics_null_disables_metrics() -> None:
    data = good()
    data["metrics"] = None
    assert parse_config(data, CODEC).metrics is None


def test_https_endpoint_means_tls() -> None:
    data = good()
    data["tracing"] = {"otlp_endpoint": "https://collector.example:4317"}
    assert parse_config(data, CODEC).tracing.insecure is False


Mutation = Callable[[dict[str, Any]], object]


def _set(path: str, value: object) -> Mutation:
    """Set a dotted path (list indexes as numbers) in the config dict."""

    def apply(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = d
        for part in head:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return apply


def _delete(path: str) -> Mutation:
    def apply(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = d
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return apply


def _add_scope(**scope: object) -> Mutation:
    return lambda d: d["scopes"].append(scope)


def _add_reservation(**r: object) -> Mutation:
    return lambda d: d["scopes"][0]["reservations"].append(r)


BAD: list[tuple[str, Mutation, str, str]] = [
    # top level and sections
    ("node type", _set("node", ["x"]), "node", "expected a string, got list"),
    ("missing node", _delete("node"), "node", "required"),
    ("node pattern", _set("node", "Spoke_1"), "node", "'Spoke_1' must be 1-63 of [a-z0-9-]"),
    ("unknown top key", _set("nodes", "x"), "nodes", "unknown key (did you mean 'node'?)"),
    ("missing dhcp", _delete("dhcp"), "dhcp", "required"),
    (
        "etcd typo",
        _set("etcd.endpoint", ["a:1"]),
        "etcd.endpoint",
        "unknown key (did you mean 'endpoints'?)",
    ),
    (
        "etcd endpoint",
        _set("etcd.endpoints", ["localhost"]),
        "etcd.endpoints[0]",
        "'localhost' is not host:port",
    ),
    ("etcd no endpoints", _set("etcd.endpoints", []), "etcd.endpoints", "at least one endpoint"),
    (
        "etcd root",
        _set("etcd.root", "hubspoke/"),
        "etcd.root",
        "'hubspoke/' must look like /name/v1",
    ),
    (
        "etcd cert alone",
        _set("etcd.cert_file", __file__),
        "etcd.cert_file",
        "cert_file and key_file go together",
    ),
    (
        "etcd missing ca",
        _set("etcd.ca_file", "/nonexistent/ca.pem"),
        "etcd.ca_file",
        "/nonexistent/ca.pem: no such file",
    ),
    ("etcd user alone", _set("etcd.user", "u"), "etcd.user", "user and password go together"),
    (
        "dhcp no interfaces",
        _set("dhcp.interfaces", []),
        "dhcp.interfaces",
        "at least one interface",
    ),
    (
        "dhcp iface twice",
        _set("dhcp.interfaces", ["eth0", "eth0"]),
        "dhcp.interfaces[1]",
        "'eth0' is listed twice",
    ),
    (
        "dhcp iface type",
        _set("dhcp.interfaces", [7]),
        "dhcp.interfaces[0]",
        "expected a string, got int",
    ),
    ("dhcp port type", _set("dhcp.port", "67"), "dhcp.port", "expected an integer, got str"),
    ("dhcp port bool", _set("dhcp.port", True), "dhcp.port", "expected an integer, got bool"),
    ("dhcp port range", _set("dhcp.port", 70000), "dhcp.port", "70000 must be >= 1 and <= 65535"),
    (
        "dhcp same ports",
        _set("dhcp.client_port", 1067),
        "dhcp.client_port",
        "1067 is also the server port",
    ),
    (
        "dhcp server id",
        _set("dhcp.server_id", "10.0.0.300"),
        "dhcp.server_id",
        "'10.0.0.300' is not an IPv4 address",
    ),
    ("dhcp offer", _set("dhcp.offer_lifetime", 0), "dhcp.offer_lifetime", "0 must be >= 1.0"),
    (
        "dhcp inflight",
        _set("dhcp.max_inflight_commits", 0),
        "dhcp.max_inflight_commits",
        "0 must be >= 1",
    ),
    (
        "dhcp queue delay",
        _set("dhcp.max_queue_delay", -1),
        "dhcp.max_queue_delay",
        "-1 must be >= 0.0",
    ),
    ("metrics listen", _set("metrics.listen", "9167"), "metrics.listen", "'9167' is not host:port"),
    (
        "metrics port",
        _set("metrics.listen", "127.0.0.1:99999"),
        "metrics.listen",
        "'127.0.0.1:99999': port 99999",
    ),
    (
        "tracing ratio",
        _set("tracing.sample_ratio", 1.5),
        "tracing.sample_ratio",
        "1.5 must be >= 0.0 and <= 1.0",
    ),
    (
        "tracing ratio type",
        _set("tracing.sample_ratio", "all"),
        "tracing.sample_ratio",
        "expected a number, got str",
    ),
    (
        "tracing endpoint",
        _set("tracing.otlp_endpoint", "http://collector"),
        "tracing.otlp_endpoint",
        "'collector' is not host:port",
    ),
    (
        "tracing queue",
        _set("tracing.max_queue_size", 0),
        "tracing.max_queue_size",
        "0 must be >= 1",
    ),
    (
        "tracing batch",
        _set("tracing.max_export_batch_size", 100000),
        "tracing.max_export_batch_size",
        "100000 is above max_queue_size 65536",
    ),
    (
        "tracing insecure",
        _set("tracing.insecure", "yes"),
        "tracing.insecure",
        "expected true or false, got str",
    ),
    (
        "log level",
        _set("log.level", "verbose"),
        "log.level",
        "'verbose' is not one of debug, info, warning, error",
    ),
    ("log format", _set("log.format", "xml"), "log.format", "'xml' is not one of json, text"),
    # one scope
    ("scopes type", _set("scopes", {"lan": {}}), "scopes", "expected a list, got dict"),
    (
        "scope typo",
        _set("scopes.0.lease", 10),
        "scopes[0].lease",
        "unknown key (did you mean 'lease_time'?)",
    ),
    ("scope no name", _delete("scopes.0.name"), "scopes[0].name", "required"),
    ("scope name", _set("scopes.0.name", "my/lan"), "scopes[0].name", "'my/lan' must match"),
    (
        "subnet bad",
        _set("scopes.0.subnet", "10.0.0.0/33"),
        "scopes[0].subnet",
        "'10.0.0.0/33' is not an IPv4 network",
    ),
    (
        "subnet host bits",
        _set("scopes.0.subnet", "10.0.0.1/24"),
        "scopes[0].subnet",
        "10.0.0.1/24: host bits set",
    ),
    ("no pools", _set("scopes.0.pools", []), "scopes[0].pools", "at least one pool is required"),
    (
        "pool reversed",
        _set("scopes.0.pools.1", "10.0.1.5-10.0.0.9"),
        "scopes[0].pools[1]",
        "10.0.1.5-10.0.0.9: first address is after last",
    ),
    (
        "pool outside",
        _set("scopes.0.pools.1", "10.0.0.250-10.0.1.5"),
        "scopes[0].pools[1]",
        "10.0.0.250-10.0.1.5: not inside subnet 10.0.0.0/24",
    ),
    (
        "pool address",
        _set("scopes.0.pools.1", "10.0.0.x-10.0.0.9"),
        "scopes[0].pools[1]",
        "'10.0.0.x' is not an IPv4 address",
    ),
    (
        "pool network",
        _set("scopes.0.pools.1", "10.0.0.0-10.0.0.9"),
        "scopes[0].pools[1]",
        "10.0.0.0-10.0.0.9: includes the subnet's network address 10.0.0.0",
    ),
    (
        "pool broadcast",
        _set("scopes.0.pools.1", "10.0.0.250-10.0.0.255"),
        "scopes[0].pools[1]",
        "10.0.0.250-10.0.0.255: includes the subnet's broadcast address",
    ),
    (
        "pools overlap",
        _set("scopes.0.pools.1", "10.0.0.150-10.0.0.160"),
        "scopes[0].pools[1]",
        "10.0.0.150-10.0.0.160 overlaps scopes[0].pools[0] (10.0.0.100-10.0.0.199)",
    ),
    (
        "lease above max",
        _set("scopes.0.lease_time", 9000),
        "scopes[0].lease_time",
        "9000 is above max_lease_time 7200",
    ),
    ("lease zero", _set("scopes.0.lease_time", 0), "scopes[0].lease_time", "0 must be >= 1"),
    (
        "min above lease",
        _set("scopes.0.min_lease_time", 4000),
        "scopes[0].min_lease_time",
        "4000 is above lease_time 3600",
    ),
    (
        "t2 at lease",
        _set("scopes.0.t2", 3600),
        "scopes[0].t2",
        "3600 must be below lease_time 3600",
    ),
    ("t1 at t2", _set("scopes.0.t1", 3150), "scopes[0].t1", "3150 must be below t2 3150"),
    (
        "t1 above default t2",
        lambda d: (d["scopes"][0].pop("t2"), d["scopes"][0].update(t1=3200)),
        "scopes[0].t1",
        "3200 must be below t2 3150",
    ),
    (
        "t2 below default t1",
        lambda d: (d["scopes"][0].pop("t1"), d["scopes"][0].update(t2=1000)),
        "scopes[0].t2",
        "1000 must be above the default t1 1800",
    ),
    ("t1 type", _set("scopes.0.t1", 1.5), "scopes[0].t1", "expected an integer, got float"),
    (
        "relay twice",
        _set("scopes.0.relay_addresses", ["192.0.2.1", "192.0.2.1"]),
        "scopes[0].relay_addresses[1]",
        "192.0.2.1 is listed twice",
    ),
    (
        "option name",
        _set("scopes.0.options.router", ["10.0.0.1"]),
        "scopes[0].options.router",
        "unknown option name (did you mean 'routers'?)",
    ),
    (
        "option code range",
        _set("scopes.0.options.255", [1]),
        "scopes[0].options.255",
        "option code 255 must be 1..254",
    ),
    (
        "option owned",
        _set("scopes.0.options.51", 60),
        "scopes[0].options.51",
        "option 51 is set by the server",
    ),
    (
        "option owned mask",
        _set("scopes.0.options", {1: "x"}),
        "scopes[0].options.1",
        "option 1 is set by the server",
    ),
    (
        "option twice",
        _set("scopes.0.options.3", ["10.0.0.2"]),
        "scopes[0].options.3",
        "option 3 is given twice",
    ),
    (
        "option value",
        _set("scopes.0.options.dns_servers", {"a": 1}),
        "scopes[0].options.dns_servers",
        "cannot encode dict for option 6",
    ),
    (
        "option null",
        _set("scopes.0.options.time_servers", None),
        "scopes[0].options.time_servers",
        "required",
    ),
    (
        "reservation outside",
        _add_reservation(hw_address="02:00:00:00:00:09", ip="10.0.1.9"),
        "scopes[0].reservations[2].ip",
        "10.0.1.9 is not inside subnet 10.0.0.0/24",
    ),
    (
        "reservation no id",
        _add_reservation(ip="10.0.0.60"),
        "scopes[0].reservations[2]",
        "give exactly one of hw_address or client_id",
    ),
    (
        "reservation both ids",
        _add_reservation(ip="10.0.0.60", hw_address="02", client_id="01"),
        "scopes[0].reservations[2]",
        "give exactly one of",
    ),
    (
        "reservation mac",
        _add_reservation(ip="10.0.0.60", hw_address="02:0:00"),
        "scopes[0].reservations[2].hw_address",
        "'02:0:00' is not hex octets",
    ),
    (
        "reservation mac long",
        _add_reservation(ip="10.0.0.60", hw_address="00" * 17),
        "scopes[0].reservations[2].hw_address",
        "17 octets, at most 16",
    ),
    (
        "reservation same ip",
        _add_reservation(ip="10.0.0.50", hw_address="02:00:00:00:00:09"),
        "scopes[0].reservations[2]",
        "10.0.0.50 is already reserved by scopes[0].reservations[0]",
    ),
    (
        "reservation same client",
        _add_reservation(ip="10.0.0.60", hw_address="02:00:00:00:00:01"),
        "scopes[0].reservations[2]",
        "hw_address 02:00:00:00:00:01 is already reserved by scopes[0].reservations[0]",
    ),
    (
        "reservation same cid",
        _add_reservation(ip="10.0.0.60", client_id="01020000000002"),
        "scopes[0].reservations[2]",
        "client_id 01:02:00:00:00:00:02 is already reserved by scopes[0].reservations[1]",
    ),
    (
        "reservation in pool",
        _add_reservation(ip="10.0.0.150", hw_address="02:00:00:00:00:09"),
        "scopes[0].reservations[2]",
        "10.0.0.150 is inside pool 10.0.0.100-10.0.0.199",
    ),
    (
        "reservation typo",
        _add_reservation(ip="10.0.0.60", mac="02"),
        "scopes[0].reservations[2].mac",
        "unknown key",
    ),
    # across scopes and against dhcp
    (
        "scope iface unknown",
        _set("scopes.0.interfaces", ["eth9"]),
        "scopes[0].interfaces[0]",
        "'eth9' is not one of dhcp.interfaces",
    ),
    (
        "scope names",
        _set("scopes.1.name", "lan"),
        "scopes[1].name",
        "'lan' is already used by scopes[0]",
    ),
    (
        "pools across",
        _add_scope(name="x", subnet="10.0.0.128/25", pools=["10.0.0.190-10.0.0.200"]),
        "scopes[2].pools[0]",
        "10.0.0.190-10.0.0.200 overlaps scopes[0].pools[0] (10.0.0.100-10.0.0.199)",
    ),
    (
        "subnets overlap",
        _add_scope(name="x", subnet="10.0.0.0/25", pools=["10.0.0.10-10.0.0.20"]),
        "scopes[2].subnet",
        "10.0.0.0/25 overlaps scopes[0].subnet 10.0.0.0/24",
    ),
    (
        "relay in other subnet",
        _add_scope(
            name="x", subnet="10.2.0.0/24", pools=["10.2.0.10"], relay_addresses=["10.1.0.1"]
        ),
        "scopes[2].relay_addresses[0]",
        "10.1.0.1 already selects scopes[1].subnet",
    ),
    (
        "relay twice across",
        _add_scope(
            name="x", subnet="10.2.0.0/24", pools=["10.2.0.10"], relay_addresses=["192.0.2.1"]
        ),
        "scopes[2].relay_addresses[0]",
        "192.0.2.1 already selects scopes[0].relay_addresses[0]",
    ),
    (
        "iface two scopes",
        _set("scopes.1.interfaces", ["eth0"]),
        "scopes[1].interfaces[0]",
        "'eth0' is already claimed by scopes[0].interfaces[0]",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "reason"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_config_is_refused_with_path_and_reason(
    mutate: Mutation, path: str, reason: str
) -> None:
    data = copy.deepcopy(good())
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, CODEC)
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(info.value) == f"{path}: {info.value.reason}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "(top): expected a mapping, got null"),
        (["node"], "(top): expected a mapping, got list"),
        ({"node": "a", "dhcp": {"interfaces": ["eth0"]}, 7: 1}, "7: keys must be strings"),
    ],
)
def test_bad_top_level_is_refused(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(data, CODEC)


def test_load_config_reports_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("node: a\ndhcp: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_config(broken, CODEC)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", CODEC)


def test_load_config_reads_yaml(tmp_path: Path) -> None:
    f = tmp_path / "spoke.yaml"
    f.write_text(
        "node: s2\ndhcp: {interfaces: [eth0]}\nscopes:\n"
        "  - {name: lan, subnet: 10.9.0.0/24, pools: [10.9.0.10-10.9.0.20],"
        " options: {routers: [10.9.0.1], 42: [10.9.0.1]}}\n"
    )
    cfg = load_config(f, CODEC)
    assert cfg.node == "s2"
    assert dict(cfg.scopes[0].options) == {3: b"\x0a\x09\x00\x01", 42: b"\x0a\x09\x00\x01"}


@given(st.lists(st.tuples(st.integers(1, 254), st.integers(0, 20)), min_size=1, max_size=6))
def test_pool_overlap_is_refused_exactly_when_two_pools_share_an_address(
    spans: list[tuple[int, int]],
) -> None:
    ranges = [(lo, min(lo + width, 254)) for lo, width in spans]
    pools = [f"10.5.0.{lo}-10.5.0.{hi}" for lo, hi in ranges]
    overlapping = any(
        a[0] <= b[1] and b[0] <= a[1] for i, a in enumerate(ranges) for b in ranges[i + 1 :]
    )
    data: dict[str, Any] = {"node": "a", "dhcp": {"interfaces": ["eth0"]}}
    data["scopes"] = [{"name": "s", "subnet": "10.5.0.0/24", "pools": pools}]
    if overlapping:
        with pytest.raises(ConfigError, match=r"^scopes\[0\]\.pools\[\d+\]: .* overlaps "):
            parse_config(data, CODEC)
    else:
        assert len(parse_config(data, CODEC).scopes[0].pools) == len(pools)
