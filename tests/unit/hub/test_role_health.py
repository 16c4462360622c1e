"""Bucket weights follow the spokes' health: the state each one last reported."""

from __future__ import annotations

import time
from typing import Any

import pytest

import hub.plan.planner as P
from hub.api.model import UtilizationReport
from hub.config import HubRoleConfig
from hub.role import HubRole
from hubspoke.assign import BucketMap
from hubspoke.etcd.election import Leadership
from hubspoke.keys import Keys


def make_role() -> HubRole:
    leadership = Leadership(name=b"e/", key=b"e/1", epoch=7, lease=1)
    client: Any = object()  # health() never touches etcd
    return HubRole(client, Keys("/t"), HubRoleConfig(node="h"), leadership, address="a:1")


def report(node: str, state: str, cpu: float = 0.1) -> UtilizationReport:
    return UtilizationReport(node=node, state=state, state_reason="", sent_at=0.0, cpu=cpu)


@pytest.mark.parametrize(
    ("state", "late", "health"),
    [
        ("NORMAL", False, 1.0),
        ("NORMAL", True, 1.0),  # late, but a member: its session is the judge
        ("COMMUNICATION-INTERRUPTED", False, 0.0),
        ("RECOVER", False, 0.0),
        ("RESOLUTION-INTERRUPTED", False, 0.0),
        ("MAINTENANCE", False, 0.0),
    ],
)
def test_health_from_the_last_report(state: str, late: bool, health: float) -> None:
    role = make_role()
    role.on_report(report("s1", state), "peer")
    if late:
        role.spokes["s1"].report_at = time.monotonic() - 60
    assert role.health("s1") == health


def test_a_spoke_without_a_report_yet_counts_as_fit() -> None:
    assert make_role().health("s9") == 1.0


def test_an_interrupted_spoke_gets_no_buckets_while_others_are_fit() -> None:
    role = make_role()
    role.on_report(report("s1", "NORMAL"), "p")
    role.on_report(report("s2", "COMMUNICATION-INTERRUPTED"), "p")
    views = [P.SpokeView(node=n, live=True, weight=role.health(n)) for n in ("s1", "s2")]
    assert P.assign_buckets(views, BucketMap()).counts() == {"s1": 256}


@pytest.mark.parametrize(("cpu", "factor"), [(0.0, 1.0), (0.69, 1.0), (0.7, 0.5), (0.95, 0.25)])
def test_measured_load_lowers_the_weight_in_steps(cpu: float, factor: float) -> None:
    role = make_role()
    role.on_report(report("s1", "NORMAL", cpu=cpu), "peer")
    assert role.health("s1") == factor


def test_a_saturated_spoke_sheds_buckets_to_an_idle_one() -> None:
    role = make_role()
    role.on_report(report("s1", "NORMAL", cpu=0.97), "p")
    role.on_report(report("s2", "NORMAL", cpu=0.2), "p")
    views = [P.SpokeView(node=n, live=True, weight=role.health(n)) for n in ("s1", "s2")]
    counts = P.assign_buckets(views, BucketMap()).counts()
    assert counts["s2"] > counts["s1"] > 0
