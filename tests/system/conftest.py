"""System tier: network namespaces, a real etcd and spoke process, real DHCP clients.

Needs root and `ip netns`; `check_environment` fails loudly otherwise (never a skip).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netlab import Lab, Segment, check_environment
from tests.support.spokelab import SpokeLab


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
