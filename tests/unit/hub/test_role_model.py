"""The hub role's bucket model (hot-standby, load-balancing) from config to the planner."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

import hub.plan.planner as P
from hub.config import HubRoleConfig, Model, parse_hub_config
from hubspoke.assign import BucketMap
from hubspoke.config import ConfigError
from spoke.config import hub_role_config, parse_config


def role(model: Model, primary: str | None = "p") -> HubRoleConfig:
    return HubRoleConfig(node="h", model=model, primary=primary)


@pytest.mark.parametrize(
    ("cfg", "live", "want"),
    [
        (role(Model.HOT_STANDBY), ("p", "s"), {"p": 256}),
        (role(Model.HOT_STANDBY), ("s",), {"s": 256}),  # primary down: the standby takes all
        (role(Model.LOAD_BALANCING), ("p", "s"), {"p": 128, "s": 128}),
        (role(Model.LOAD_BALANCING), ("s",), {"s": 256}),
    ],
    ids=["standby-idle", "standby-takes-over", "split", "survivor-takes-all"],
)
def test_model_weights_give_the_planned_bucket_shares(
    cfg: HubRoleConfig, live: tuple[str, ...], want: dict[str, int]
) -> None:
    views = [
        P.SpokeView(
            node=n, live=n in live, down_since=None if n in live else 0.0, weight=cfg.weight(n)
        )
        for n in ("p", "s")
    ]
    assert P.assign_buckets(views, BucketMap()).counts() == want


def test_the_primary_takes_its_buckets_back_when_it_returns() -> None:
    cfg = role(Model.HOT_STANDBY)
    standby_all = BucketMap(("s",) * 256)
    views = [P.SpokeView(node=n, live=True, weight=cfg.weight(n)) for n in ("p", "s")]
    assert P.assign_buckets(views, standby_all).counts() == {"p": 256}


def hub_doc(**extra: Any) -> dict[str, Any]:
    return {"node": "hub-1", "grpc": {"listen": "127.0.0.1:7500"}, **extra}


@pytest.mark.parametrize(
    ("extra", "path", "reason"),
    [
        ({"model": "hot-standby"}, "primary", "required with model: hot-standby"),
        ({"model": "active-active"}, "model", ""),
        ({"model": "hot-standby", "primary": "-x"}, "primary", "must be 1-63"),
    ],
)
def test_bad_models_are_refused_naming_the_field(
    extra: dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_hub_config(hub_doc(**extra))
    assert e.value.path == path and reason in str(e.value)


def test_a_spoke_hub_section_carries_model_planner_and_seed_scopes() -> None:
    scope = {"name": "lan", "subnet": "10.0.0.0/24", "pools": ["10.0.0.10-10.0.0.99"]}
    cfg = parse_config(
        {
            "node": "s1",
            "mode": "cluster",
            "dhcp": {"interfaces": ["eth0"]},
            "cluster": {"grpc_listen": "0.0.0.0:7601"},
            "hub": {
                "eligible": True,
                "model": "hot-standby",
                "primary": "s1",
                "planner": {"mclt": 3, "max_interrupted": 2},
                "scopes": [scope],
            },
        }
    )
    assert cfg.cluster.grpc_listen == "0.0.0.0:7601"
    r = hub_role_config(cfg, IPv4Address("10.0.0.2"))
    assert (r.model, r.primary, r.planner.mclt, r.planner.max_interrupted) == (
        Model.HOT_STANDBY,
        "s1",
        3.0,
        2.0,
    )
    assert r.seed_scopes == (scope,)
    assert r.weight("s1") == 1.0 and r.weight("s2") == 0.0
