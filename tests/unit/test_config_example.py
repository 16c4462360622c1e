"""The shipped example file and the real option codec (hubspoke/dhcp/options.py) behind config."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from spoke.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "spoke.example.yaml"


def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def test_example_file_parses() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.node == "spoke-1"
    assert [s.name for s in cfg.scopes] == ["lan", "branch"]
    lan = cfg.scopes[0]
    assert lan.options[3] == bytes([10, 0, 0, 1])
    assert lan.options[6] == bytes([10, 0, 0, 53, 10, 0, 0, 54])
    assert lan.options[15] == b"example.net"
    assert lan.options[42] == bytes([10, 0, 0, 1])
    assert lan.options[119] == b"\x07example\x03net\x00\x04corp\x07example\x03net\x00"
    assert lan.options[224] == b"\x01\x02\xff"
    assert cfg.metrics is not None and cfg.tracing.otlp_endpoint is None


@pytest.mark.parametrize("key", ["dns_servers", "dns-servers", 6, "6"])
def test_option_names_take_either_spelling_or_a_code(key: object) -> None:
    data = example()
    data["scopes"][1]["options"] = {key: ["192.0.2.53"]}
    assert dict(parse_config(data).scopes[1].options) == {6: bytes([192, 0, 2, 53])}


@pytest.mark.parametrize(
    ("options", "path", "reason"),
    [
        ({"lease_time": 60}, "scopes[1].options.lease_time", "is set by the server"),
        ({58: 60}, "scopes[1].options.58", "is set by the server"),
        ({"client_id": "01"}, "scopes[1].options.client_id", "is set by the server"),
        ({"routers": ["10.1.0.300"]}, "scopes[1].options.routers", "10.1.0.300"),
        ({"interface_mtu": 70000}, "scopes[1].options.interface_mtu", "option 26"),
        (
            {"dns_server": ["10.0.0.1"]},
            "scopes[1].options.dns_server",
            "did you mean 'dns_servers'",
        ),
    ],
)
def test_real_codec_refusals_name_the_option(
    options: dict[object, object], path: str, reason: str
) -> None:
    data = copy.deepcopy(example())
    data["scopes"][1]["options"] = options
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.path == path
    assert reason in info.value.reason
