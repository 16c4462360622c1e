"""The hub's metrics object and its scrape-time gauges, without a server or etcd."""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

import hub.plan.planner as P
from hub.api.model import ClusterState, SpokeState
from hub.metrics import (
    FAILOVER_STATES,
    MOVE_KINDS,
    HubMetrics,
    cluster_families,
    state_label,
)


def cluster(*spokes: SpokeState, unassigned: int = 0) -> ClusterState:
    return ClusterState(
        hub_node="hub-a",
        epoch=7,
        hub_address="127.0.0.1:7500",
        spokes=spokes,
        blocks=(),
        buckets_total=256,
        buckets_unassigned=unassigned,
    )


def samples(families: Sequence[Metric]) -> dict[tuple[str, tuple[str, ...]], float]:
    out = {}
    for f in families:
        for s in f.samples:
            out[(s.name, tuple(s.labels.values()))] = s.value
    return out


def test_move_kinds_are_the_planners_actions() -> None:
    assert set(MOVE_KINDS) == {t.__name__ for t in get_args(P.Action)}
    assert set(MOVE_KINDS) == {
        "CreateBlock",
        "SetBuckets",
        "GrantBlock",
        "RequestHandover",
        "ReclaimBlock",
        "RemoveBlock",
    }


@pytest.mark.parametrize(
    ("state", "label"),
    [
        ("NORMAL", "normal"),
        ("PARTNER-DOWN", "partner-down"),
        ("COMMUNICATION-INTERRUPTED", "communication-interrupted"),
    ],
)
def test_state_labels_are_the_spokes(state: str, label: str) -> None:
    assert state_label(state) == label
    assert label in FAILOVER_STATES


def test_not_leading_gives_families_without_samples() -> None:
    families = cluster_families(None)
    assert [f.name for f in families] == [
        "hubspoke_hub_spokes",
        "hubspoke_hub_buckets",
        "hubspoke_hub_buckets_unassigned",
    ]
    assert all(f.samples == [] for f in families)


def test_cluster_gauges_count_states_and_buckets() -> None:
    got = samples(
        cluster_families(
            cluster(
                SpokeState("s1", "NORMAL", live=True, bucket_count=128),
                SpokeState("s2", "NORMAL", live=True, bucket_count=100),
                SpokeState("s3", "PARTNER-DOWN", bucket_count=0),
                SpokeState("s4", "STARTUP", live=True, bucket_count=0),
                unassigned=28,
            )
        )
    )
    assert got[("hubspoke_hub_spokes", ("normal",))] == 2
    assert got[("hubspoke_hub_spokes", ("partner-down",))] == 1
    assert got[("hubspoke_hub_spokes", ("startup",))] == 1
    for quiet in ("recover", "maintenance", "communication-interrupted"):
        assert got[("hubspoke_hub_spokes", (quiet,))] == 0
    assert got[("hubspoke_hub_buckets", ("s1",))] == 128
    assert got[("hubspoke_hub_buckets", ("s2",))] == 100
    assert got[("hubspoke_hub_buckets", ("s3",))] == 0  # a down spoke is still listed
    assert got[("hubspoke_hub_buckets_unassigned", ())] == 28


def test_an_unknown_reported_state_gets_its_own_label() -> None:
    got = samples(cluster_families(cluster(SpokeState("s1", "SOMETHING-NEW", live=True))))
    assert got[("hubspoke_hub_spokes", ("something-new",))] == 1
    assert sum(v for (name, _), v in got.items() if name == "hubspoke_hub_spokes") == 1


def test_a_term_as_hub_from_election_to_stepping_down() -> None:
    m = HubMetrics()
    r = m.registry
    assert r.get_sample_value("hubspoke_hub_leader") == 0
    assert r.get_sample_value("hubspoke_hub_epoch") == 0
    for kind in MOVE_KINDS:  # every kind present from the start, at 0
        assert r.get_sample_value("hubspoke_hub_moves_total", {"kind": kind}) == 0
    assert r.get_sample_value("hubspoke_hub_buckets_unassigned") is None

    m.elected(41)
    assert r.get_sample_value("hubspoke_hub_leader") == 1
    assert r.get_sample_value("hubspoke_hub_epoch") == 41
    assert r.get_sample_value("hubspoke_hub_elections_total") == 1
    assert r.get_sample_value("hubspoke_hub_buckets_unassigned") is None  # not serving yet

    state = cluster(SpokeState("s1", "NORMAL", live=True, bucket_count=256))
    m.serving(lambda: state)
    m.moved("SetBuckets")
    m.moved("GrantBlock")
    m.moved("GrantBlock")
    m.report()
    assert r.get_sample_value("hubspoke_hub_moves_total", {"kind": "SetBuckets"}) == 1
    assert r.get_sample_value("hubspoke_hub_moves_total", {"kind": "GrantBlock"}) == 2
    assert r.get_sample_value("hubspoke_hub_reports_total") == 1
    assert r.get_sample_value("hubspoke_hub_buckets", {"node": "s1"}) == 256
    assert r.get_sample_value("hubspoke_hub_spokes", {"state": "normal"}) == 1

    m.stepped_down()
    assert r.get_sample_value("hubspoke_hub_leader") == 0
    assert r.get_sample_value("hubspoke_hub_epoch") == 0
    assert r.get_sample_value("hubspoke_hub_buckets", {"node": "s1"}) is None
    # counters keep counting across terms
    m.elected(50)
    assert r.get_sample_value("hubspoke_hub_elections_total") == 2
    assert r.get_sample_value("hubspoke_hub_moves_total", {"kind": "GrantBlock"}) == 2


def test_a_failing_cluster_source_keeps_the_rest_of_the_scrape() -> None:
    def broken() -> ClusterState:
        raise RuntimeError("mirror gone")

    m = HubMetrics()
    m.elected(3)
    m.serving(broken)
    body, ctype = m.exposition()
    assert ctype.startswith("text/plain")
    text = body.decode()
    assert "hubspoke_hub_leader 1.0" in text
    assert "hubspoke_hub_spokes{" not in text


def test_exposition_parses_and_openmetrics_on_request() -> None:
    m = HubMetrics()
    m.moved("ReclaimBlock")
    body, _ = m.exposition()
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {
        "hubspoke_hub_leader",
        "hubspoke_hub_epoch",
        "hubspoke_hub_elections",
        "hubspoke_hub_reports",
        "hubspoke_hub_moves",
    } <= names
    body, ctype = m.exposition("application/openmetrics-text")
    assert ctype.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")
    assert 'hubspoke_hub_moves_total{kind="ReclaimBlock"} 1.0' in body.decode()


def test_registries_are_separate() -> None:
    a, b = HubMetrics(), HubMetrics()
    a.elected(1)
    assert b.registry.get_sample_value("hubspoke_hub_leader") == 0
