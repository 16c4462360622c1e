"""The etcd the tests run knows every flag the deployments set for compaction and the quota
(`tests.lab.etcdspace.SPACE_FLAGS`, checked in deploy/compose.yaml and deploy/k8s by the unit
tests)."""

from __future__ import annotations

from tests.lab.etcdspace import etcd_lacks


def test_the_installed_etcd_knows_every_space_flag() -> None:
    assert etcd_lacks() == []
