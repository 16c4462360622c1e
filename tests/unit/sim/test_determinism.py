"""A seed replays exactly (in one process, and across processes under PYTHONHASHSEED=0), and
the etcd workload keeps its invariants under random faults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim.workload import run_workload

ROOT = Path(__file__).resolve().parents[3]


def test_a_seed_replays_exactly_in_one_process() -> None:
    first = run_workload(5, horizon=15.0, settle=10.0)
    assert first.faults > 0 and first.acked > 0
    assert run_workload(5, horizon=15.0, settle=10.0) == first
    assert run_workload(6, horizon=15.0, settle=10.0).digest != first.digest


@pytest.mark.parametrize("seed", range(4))
def test_the_workload_keeps_its_invariants_under_faults(seed: int) -> None:
    run_workload(seed, horizon=30.0, settle=15.0)  # raises InvariantBroken


def test_a_seed_replays_exactly_in_another_process() -> None:
    env = {**os.environ, "PYTHONHASHSEED": "1", "PYTHONPATH": str(ROOT)}  # re-execs under 0
    command = [sys.executable, "-m", "tests.sim.workload", "--seeds", "9", "--horizon", "15"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    here = run_workload(9, horizon=15.0)  # this process has pytest's hash seed: any
    assert done.stdout.split()[2] == here.digest
