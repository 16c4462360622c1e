"""System tests for tests.lab.netlab: real namespaces, a real bridge, real ping."""

from __future__ import annotations

import subprocess

import pytest

from tests.lab.netlab import Lab, LabError, list_namespaces

pytestmark = pytest.mark.system


def test_two_hosts_ping_over_a_segment_and_teardown_leaves_nothing() -> None:
    before = list_namespaces()
    with Lab("hst") as lab:
        seg = lab.segment("lan")
        a = lab.host("a", seg, ip="10.201.0.1/24")
        b = lab.host("b", seg, ip="10.201.0.2/24")
        assert set(lab.namespaces) <= list_namespaces()
        assert a.ifname(seg) == "eth0"
        assert a.ping(b.ip, count=2)
        assert b.ping(a.ip, count=2)
        created = set(lab.namespaces)
        ours = f"{lab.prefix}-{lab.run_id}-"
    after = list_namespaces()
    assert created
    assert not created & after
    # Other labs may run at the same time: compare only what carries this run's prefix.
    assert not {name for name in after - before if name.startswith(ours)}


def test_root_namespace_gains_no_interface() -> None:
    links_before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    with Lab("hst") as lab:
        seg = lab.segment("lan", subnet="10.202.0.0/24")
        lab.host("a", seg)
        links_during = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert links_during == links_before


def test_host_on_two_segments_reaches_both_and_segments_are_isolated() -> None:
    with Lab("hst") as lab:
        left = lab.segment("left", subnet="10.203.1.0/24")
        right = lab.segment("right", subnet="10.203.2.0/24")
        relay = lab.host("relay", [left, right])
        a = lab.host("a", left)
        b = lab.host("b", right, ip="10.203.1.200/24")  # same subnet as left, other wire
        assert relay.ifname(left) == "eth0"
        assert relay.ifname(right) == "eth1"
        assert relay.address(left).ip != a.address(left).ip
        assert relay.ping(a.ip)
        # b sits on the other bridge: a cannot reach it even with an address in its subnet.
        assert not a.ping(b.ip, timeout_s=1)


def test_teardown_kills_tracked_processes_and_runs_on_exception() -> None:
    procs: list[subprocess.Popen[bytes]] = []
    created: set[str] = set()
    with pytest.raises(RuntimeError, match="boom"), Lab("hst") as lab:
        seg = lab.segment("lan", subnet="10.204.0.0/24")
        host = lab.host("a", seg)
        procs.append(host.popen(["sleep", "60"]))
        # A process that ignores SIGTERM must still die (SIGKILL after the grace period).
        procs.append(host.popen(["sh", "-c", "trap '' TERM; sleep 60"]))
        created = set(lab.namespaces)
        raise RuntimeError("boom")
    assert all(p.returncode is not None for p in procs)
    assert len(created) == 2
    assert not created & list_namespaces()


def test_bad_names_are_refused() -> None:
    with Lab("hst") as lab:
        with pytest.raises(ValueError):
            lab.segment("Bad_Name")
        seg = lab.segment("lan")
        host = lab.host("a", seg)
        with pytest.raises(LabError):
            host.address()
