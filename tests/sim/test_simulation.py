"""The cluster simulation over 2,000 seeds, as part of `make test` (more: `make simulate`; the
whole suite must stay under 30 minutes on two cores, and a seed costs about a third of a second
of CPU: about 5 minutes on two cores; the whole suite took 23 minutes with 1,500).

Each seed is a run of 80 virtual seconds of clients and faults, then healing and settling (see
`tests.sim.world`); a failing seed is printed with its plan and replays with
`python -m tests.sim --seed N --horizon 80 --verbose`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEEDS = os.environ.get("HUBSPOKE_SIM_SEEDS", "1-2000")


@pytest.mark.timeout(1200)
def test_no_seed_breaks_an_invariant() -> None:
    command = [sys.executable, "-m", "tests.sim", "--seeds", SEEDS, "--horizon", "80"]
    out = subprocess.run(
        [*command, "--jobs", "2", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=1150,
    )
    print(out.stdout[-5000:], out.stderr[-5000:])
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
    assert "all seeds passed" in out.stdout


def _summary(seed: int) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tests.sim", "--seed", str(seed), "--horizon", "80"],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith(f"seed {seed} "))
    assert "'trace': '" in line
    return line


@pytest.mark.timeout(600)
def test_a_seed_replays_the_same_run_in_another_process() -> None:
    """A failing seed must reproduce: two processes, the same writes to etcd in the same order
    (the trace digest), the same leases, waits and states."""
    assert _summary(13) == _summary(13)
