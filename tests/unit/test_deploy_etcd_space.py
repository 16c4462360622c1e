"""etcd in deploy/compose.yaml compacts itself and has an explicit quota; the shared check
(`tests.lab.etcdspace`, also applied to deploy/k8s by test_k8s_manifests.py) refuses what
it should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.etcdspace import (
    check_space_flags,
    flags_from_env,
    quantity_bytes,
    retention_hours,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return doc


def test_every_compose_etcd_member_compacts_and_has_a_quota() -> None:
    services = compose()["services"]
    members = {n: s for n, s in services.items() if "etcd.Dockerfile" in str(s.get("build"))}
    assert sorted(members) == ["etcd-1", "etcd-2", "etcd-3"]
    for name, svc in members.items():
        check_space_flags(flags_from_env(svc["environment"]), where=f"compose {name}")
    text = COMPOSE.read_text(encoding="utf-8")
    for step in ("etcdctl compact", "etcdctl defrag", "etcdctl alarm disarm"):
        assert step in text, f"deploy/compose.yaml does not say what to do on NOSPACE: {step}"


GOOD = {
    "auto-compaction-mode": "periodic",
    "auto-compaction-retention": "1h",
    "quota-backend-bytes": str(4 * 2**30),
}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"auto-compaction-retention": None}, "compaction is off"),
        ({"auto-compaction-retention": "0"}, "compaction is off"),
        ({"auto-compaction-mode": "revision", "auto-compaction-retention": "0"}, "off"),
        ({"auto-compaction-mode": "weekly"}, "auto-compaction-mode"),
        ({"quota-backend-bytes": None}, "no explicit --quota-backend-bytes"),
        ({"quota-backend-bytes": "0"}, "0 < q"),
        ({"quota-backend-bytes": "4Gi"}, "a number"),
        ({"quota-backend-bytes": str(16 * 2**30)}, "0 < q"),
    ],
)
def test_the_check_refuses(change: dict[str, str | None], complaint: str) -> None:
    flags = {k: v for k, v in (GOOD | change).items() if v is not None}
    with pytest.raises(AssertionError, match=complaint):
        check_space_flags(flags, where="here")


def test_the_check_accepts_and_weighs_the_volume() -> None:
    check_space_flags(GOOD, where="here", volume_bytes=quantity_bytes("8Gi"))
    revision = GOOD | {"auto-compaction-mode": "revision", "auto-compaction-retention": "100000"}
    check_space_flags(revision, where="here")
    with pytest.raises(AssertionError, match="over half the volume"):
        check_space_flags(GOOD, where="here", volume_bytes=quantity_bytes("6Gi"))


def test_units() -> None:
    assert quantity_bytes("8Gi") == 8 * 2**30 and quantity_bytes("500M") == 500 * 10**6
    assert quantity_bytes("1024") == 1024
    assert retention_hours("1h") == 1 and retention_hours("1h30m") == 1.5
    assert retention_hours("72") == 72 and retention_hours("90s") == 90 / 3600
    assert flags_from_env({"ETCD_QUOTA_BACKEND_BYTES": 5, "PATH": "/bin"}) == {
        "quota-backend-bytes": "5"
    }
