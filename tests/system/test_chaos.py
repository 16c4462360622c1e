"""Chaos under load against hubspoke: every fault of `make chaos`, with shorter holds.

Each test builds a fresh cluster (hub on its own host, three spokes, etcd of one member or
three), runs perfdhcp behind dhcrelay at 150 new clients/s with every ACK captured, injects one
fault, holds it, undoes it, lets the spokes replay their journals, and reads etcd. Asserted:
no address acknowledged to two clients with overlapping validity, no acknowledged binding
missing from etcd, service to new clients resumed after the fault. Times are printed only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos_hubspoke import FAULTS, Fault, run_fault
from tests.support.netlab import Lab

HOLD_S = 6.0  # > session TTL (3 s) and > interrupted_after (2.5 s)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_under_load_loses_nothing_and_duplicates_nothing(
    fault: Fault, lab: Lab, tmp_path: Path
) -> None:
    outcome = run_fault(
        fault, lab, tmp_path, hold=min(fault.hold, HOLD_S), rate=150, pre=2.0, post=6.0
    )
    print(
        f"{fault.name}: new clients served again after {outcome.resume_s:.2f} s; survivors' "
        f"longest gap {outcome.survivors_gap_s}; {outcome.acks} ACKs; {outcome.notes}"
    )
    assert outcome.acks_before > 0, outcome
    assert outcome.duplicates == 0, outcome
    assert outcome.lost == 0, outcome
    assert outcome.resumed, outcome
