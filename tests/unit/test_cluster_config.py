"""Config for cluster mode: `mode`, `cluster` and `hub` sections, and the mode/scopes rule."""

from __future__ import annotations

from typing import Any

import pytest

from spoke.config import ClusterConfig, ConfigError, HubRoleConfig, Mode, parse_config

SCOPE = {"name": "lan", "subnet": "10.0.0.0/24", "pools": ["10.0.0.10-10.0.0.20"]}


def data(**extra: Any) -> dict[str, Any]:
    return {"node": "a", "dhcp": {"interfaces": ["eth0"]}, **extra}


@pytest.mark.parametrize(
    ("extra", "mode"),
    [
        ({}, Mode.CLUSTER),
        ({"scopes": []}, Mode.CLUSTER),
        ({"scopes": [SCOPE]}, Mode.STANDALONE),
        ({"mode": "cluster"}, Mode.CLUSTER),
        ({"mode": "standalone", "scopes": [SCOPE]}, Mode.STANDALONE),
    ],
)
def test_mode_defaults_from_scopes(extra: dict[str, Any], mode: Mode) -> None:
    cfg = parse_config(data(**extra))
    assert cfg.mode is mode
    assert cfg.cluster == ClusterConfig() and cfg.hub == HubRoleConfig()


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"mode": "standalone"}, "scopes", "required in standalone mode"),
        ({"mode": "cluster", "scopes": [SCOPE]}, "scopes", "not allowed in cluster mode"),
        ({"mode": "mesh"}, "mode", "is not one of"),
        ({"cluster": {"report_interval": 0}}, "cluster.report_interval", "must be >="),
        ({"cluster": {"session_ttl": 1}}, "cluster.session_ttl", ">= 2"),
        ({"cluster": {"token": "a b"}}, "cluster.token", "without spaces"),
        ({"cluster": {"tokn": "x"}}, "cluster.tokn", "did you mean 'token'"),
        ({"hub": {"eligible": "yes"}}, "hub.eligible", "true or false"),
        ({"hub": {"listen": "nowhere"}}, "hub.listen", "is not host:port"),
        ({"hub": {"advertise": "0.0.0.0:7500"}}, "hub.advertise", "not an address"),
        ({"hub": {"advertise": "10.0.0.2:0"}}, "hub.advertise", "not an address"),
    ],
)
def test_bad_cluster_config_names_the_field(extra: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data(**extra))
    assert e.value.path == field
    assert reason in str(e.value)


def test_cluster_sections_parse() -> None:
    cfg = parse_config(
        data(
            mode="cluster",
            cluster={"report_interval": 0.5, "session_ttl": 3, "token": "s3cret"},
            hub={"eligible": True, "listen": "0.0.0.0:7501", "advertise": "10.0.0.2:7501"},
        )
    )
    assert cfg.cluster == ClusterConfig(report_interval=0.5, session_ttl=3, token="s3cret")
    assert cfg.hub == HubRoleConfig(eligible=True, listen="0.0.0.0:7501", advertise="10.0.0.2:7501")
    assert "s3cret" not in repr(cfg)


def test_hub_tls(tmp_path: Any) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "c.key"))
    for f in (ca, cert, key):
        f.write_text("pem")
    full = {"ca_file": str(ca), "cert_file": str(cert), "key_file": str(key), "server_name": "h"}
    cfg = parse_config(data(cluster={"hub_tls": full}))
    assert cfg.cluster.hub_tls is not None
    assert (cfg.cluster.hub_tls.ca_file, cfg.cluster.hub_tls.cert_file) == (ca, cert)
    assert cfg.cluster.hub_tls_server_name == "h"
    assert parse_config(data(cluster={"hub_tls": None})).cluster.hub_tls is None
    roots = parse_config(data(cluster={"hub_tls": {}})).cluster.hub_tls
    assert roots is not None and roots.ca_file is None  # TLS with the system roots
    with pytest.raises(ConfigError) as e:
        parse_config(data(cluster={"hub_tls": {"ca_file": str(tmp_path / "nope.pem")}}))
    assert e.value.path == "cluster.hub_tls.ca_file" and "no such file" in e.value.reason
    with pytest.raises(ConfigError) as e:
        parse_config(data(cluster={"hub_tls": {"cert_file": str(cert)}}))
    assert e.value.path == "cluster.hub_tls.cert_file"
