"""A simulated etcd workload seed replays exactly in another process (under PYTHONHASHSEED=0,
which the runner re-execs under): the digest of every write etcd applied is the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.sim.workload import run_workload

ROOT = Path(__file__).resolve().parents[2]


def test_a_seed_replays_exactly_in_another_process() -> None:
    env = {**os.environ, "PYTHONHASHSEED": "1", "PYTHONPATH": str(ROOT)}  # re-execs under 0
    command = [sys.executable, "-m", "tests.sim.workload", "--seeds", "9", "--horizon", "15"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    here = run_workload(9, horizon=15.0)  # this process has pytest's hash seed: any
    assert done.stdout.split()[2] == here.digest
