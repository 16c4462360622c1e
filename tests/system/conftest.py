"""System tier: network namespaces, a real etcd and spoke process, real DHCP clients.

Needs root and `ip netns`; `check_environment` fails loudly otherwise (never a skip).
Every test ends by checking the logs of the hub and spoke processes it started for asyncio
errors (`tests.lab.asyncio_audit`), after its fixtures have stopped them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import asyncio_audit
from tests.lab.clusterlab import ClusterLab
from tests.lab.netlab import Lab, Segment, check_environment
from tests.lab.spokelab import SpokeLab


@pytest.fixture(autouse=True)
def no_asyncio_errors() -> Iterator[None]:
    """Set up before (so torn down after) every other fixture of the test: the processes have
    stopped when their logs are checked."""
    asyncio_audit.forget()
    yield
    asyncio_audit.check_watched()


@pytest.fixture
def lab() -> Iterator[Lab]:
    check_environment()
    with Lab("hs") as lab:
        yield lab


@pytest.fixture
def lan(lab: Lab) -> Segment:
    return lab.segment("lan", subnet="10.77.0.0/24")


@pytest.fixture
def spoke(lab: Lab, lan: Segment, tmp_path: Path) -> Iterator[SpokeLab]:
    sl = SpokeLab.create(lab, lan, tmp_path)
    try:
        yield sl
    finally:
        sl.close()


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, lab: Lab, lan: Segment, tmp_path: Path
) -> Iterator[ClusterLab]:
    """A `ClusterLab` on `lan` (etcd on `db`, nothing started). A test or module sets what differs
    with the `cluster` marker: `pytestmark = pytest.mark.cluster(scopes=[...], planner={...})`."""
    marker = request.node.get_closest_marker("cluster")
    settings: dict[str, Any] = dict(marker.kwargs) if marker else {}
    unknown = set(settings) - {"scopes", "planner"}
    assert not unknown, f"pytest.mark.cluster: unknown settings {sorted(unknown)}"
    cl = ClusterLab.create(lab, lan, tmp_path)
    try:
        if settings.get("scopes") is not None:
            cl.scopes = list(settings["scopes"])
        if settings.get("planner") is not None:
            cl.planner = dict(settings["planner"])
        yield cl
    finally:
        cl.close()
