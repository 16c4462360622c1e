"""Unit tests for the bench's relayed topology and cluster target: plans, configs, argv, report."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import BLOCK_SIZE, SPOKES, balanced, cluster_spoke_config, hub_config
from bench.measure import SearchResult, StepResult, StopReason, limit_of
from bench.perfdhcp import LoadSpec, parse_report
from bench.relay import dhcrelay_command
from bench.report import Machine, TargetOutcome, render
from bench.spoke import spoke_config
from bench.target import AddressPlan
from hub.config import parse_hub_config
from spoke.config import Mode, parse_config

PLAN = AddressPlan()
DONE = """\
***Statistics for: DISCOVER-OFFER***
sent packets: 3000
received packets: 2000
drops: 1000
***Statistics for: REQUEST-ACK***
sent packets: 2000
received packets: 2000
drops: 0
"""


@pytest.mark.parametrize(
    ("index", "relayed", "address"),
    [
        (0, False, "10.64.0.10"),
        (2, False, "10.64.0.12"),
        (0, True, "10.63.0.10"),
        (1, True, "10.63.0.11"),
    ],
)
def test_server_addresses_by_topology(index: int, relayed: bool, address: str) -> None:
    assert PLAN.server(index, relayed=relayed) == address


def test_relayed_plan_keeps_segments_apart_and_the_client_in_the_scope() -> None:
    lan = ipaddress.IPv4Network(PLAN.lan_subnet)
    edge = ipaddress.IPv4Network(PLAN.subnet)
    assert not lan.overlaps(edge)
    assert ipaddress.IPv4Address(PLAN.relay_lan) in lan
    assert ipaddress.IPv4Address(PLAN.relay_edge) in edge
    assert ipaddress.IPv4Address(PLAN.client) in edge  # the giaddr selects the scope
    assert ipaddress.IPv4Address(PLAN.server(0, relayed=True)) in lan


def test_dhcrelay_fans_out_to_every_server() -> None:
    argv = dhcrelay_command("eth1", "eth0", ["10.63.0.11", "10.63.0.12"], Path("/tmp/x.pid"))
    assert argv[0] == "dhcrelay"
    assert "-d" in argv and "-4" in argv
    assert argv[argv.index("-id") + 1] == "eth1"
    assert argv[argv.index("-iu") + 1] == "eth0"
    assert argv[-2:] == ["10.63.0.11", "10.63.0.12"]
    with pytest.raises(ValueError):
        dhcrelay_command("eth1", "eth0", [], Path("/tmp/x.pid"))


def test_hub_config_is_accepted_by_the_hub_and_its_scope_contains_the_giaddr() -> None:
    raw = hub_config(etcd_endpoint="10.63.0.10:2379", listen="10.63.0.10:7500", plan=PLAN)
    cfg = parse_hub_config(raw)
    assert cfg.role.planner.block_size == BLOCK_SIZE
    assert cfg.metrics is None
    scope = raw["scopes"][0]
    assert ipaddress.IPv4Address(PLAN.client) in ipaddress.IPv4Network(scope["subnet"])
    first, last = (ipaddress.IPv4Address(a) for a in scope["pools"][0].split("-"))
    assert int(last) - int(first) + 1 == 1 << 17


def test_cluster_spoke_config_is_accepted_by_the_spoke_in_cluster_mode() -> None:
    cfg = parse_config(
        cluster_spoke_config(
            node="s1", etcd_endpoint="10.63.0.10:2379", interface="eth0", journal=Path("/w/s1.j")
        )
    )
    assert cfg.mode is Mode.CLUSTER
    assert cfg.scopes == ()
    assert cfg.cluster.token is not None
    assert cfg.failover.journal_path("s1") == Path("/w/s1.j")


def test_standalone_spoke_config_is_accepted_by_the_spoke() -> None:
    cfg = parse_config(
        spoke_config(
            etcd_endpoint="10.64.0.10:2379",
            interface="eth0",
            plan=PLAN,
            pool_size=1024,
            journal=Path("/w/j"),
        )
    )
    assert cfg.failover.journal_path(cfg.node) == Path("/w/j")
    assert cfg.mode is Mode.STANDALONE
    assert len(cfg.scopes) == 1


def _spoke(node: str, live: bool = True, buckets: int = 128, blocks: int = 1) -> dict[str, Any]:
    return {"node": node, "live": live, "bucket_count": buckets, "blocks": ["b"] * blocks}


@pytest.mark.parametrize(
    ("spokes", "ready"),
    [
        ([_spoke("s1"), _spoke("s2")], True),
        ([_spoke("s1")], False),
        ([_spoke("s1"), _spoke("s2", live=False)], False),
        ([_spoke("s1", buckets=256), _spoke("s2", buckets=0)], False),
        ([_spoke("s1"), _spoke("s2", blocks=0)], False),
        ([], False),
    ],
)
def test_balanced_needs_every_spoke_live_with_buckets_and_blocks(
    spokes: list[dict[str, Any]], ready: bool
) -> None:
    assert balanced({"spokes": spokes}, SPOKES) is ready


def _failed_step(relay_cpu_s: float, server_cpu_s: float = 2.0) -> StepResult:
    spec = LoadSpec(rate=1000, seconds=3, local_address="a", server_address="b")
    return StepResult(spec, parse_report(DONE), 4.0, 1.0, server_cpu_s, 0.5, relay_cpu_s)


def test_limit_names_dhcrelay_and_counts_it_towards_the_machine() -> None:
    # perfdhcp 0.25 + server 1.0 cores: 62% of 2 cores; dhcrelay's 0.5 makes it 87%.
    relayed = limit_of(
        SearchResult(None, _failed_step(2.0, 4.0), StopReason.FAILED_STEP, ()), cores=2
    )
    assert "dhcrelay 0.50" in relayed
    assert relayed.startswith("machine CPU")
    direct = limit_of(
        SearchResult(None, _failed_step(0.0, 4.0), StopReason.FAILED_STEP, ()), cores=2
    )
    assert "dhcrelay" not in direct
    assert direct.startswith("server (CPU to spare)")


def render_page(*outcomes: TargetOutcome) -> str:
    """The results page for `outcomes` on a 2-core machine."""
    machine = Machine(cores=2, cpu_model="cpu", kernel="k", perfdhcp="2.2.0")
    return render(list(outcomes), machine, "python -m bench.run", "now")


def test_report_shows_dhcrelay_cores_per_step() -> None:
    step = _failed_step(0.8)
    search = SearchResult(None, step, StopReason.FAILED_STEP, (step,))
    text = render_page(TargetOutcome("cluster", "x", search=search))
    assert "| dhcrelay cores |" in text
    assert "| cluster | 1,000 | 3,000 | 2,000 | 33.33% | 0.25 | 0.50 | 0.00 | 0.20 |" in text


@pytest.mark.parametrize(
    ("busiest_cpu_s", "phrase"),
    [(3.8, "one server process at 0.95 of a core"), (2.0, "server (CPU to spare)")],
)
def test_limit_names_a_server_process_bound_by_one_core(busiest_cpu_s: float, phrase: str) -> None:
    spec = LoadSpec(rate=1000, seconds=3, local_address="a", server_address="b")
    step = StepResult(spec, parse_report(DONE), 4.0, 1.0, 4.0, 0.5, busiest_cpu_s=busiest_cpu_s)
    assert limit_of(SearchResult(None, step, StopReason.FAILED_STEP, ()), cores=2).startswith(
        phrase
    )


def test_report_gives_cpu_per_dora_at_the_max_rate() -> None:
    # DONE completes 2,000 exchanges; the step used 1.0 s of perfdhcp, 2.0 s of servers
    # and 0.8 s of dhcrelay: 1,000 us of server CPU and 900 us load-side per DORA.
    step = _failed_step(0.8)
    search = SearchResult(step, None, StopReason.LADDER_END, (step,))
    text = render_page(TargetOutcome("cluster", "x", search=search))
    assert "| cluster | >= 1,000 | not reached (top of the rate ladder) | 1000 / 900 |" in text
    failed = render_page(TargetOutcome("cluster", "x", error="no answer"))
    assert "| cluster | n/a | no answer | n/a | n/a | n/a | n/a |" in failed
