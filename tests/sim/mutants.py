"""The defects issue 11 found, put back one at a time: the simulation must catch each one.

Each mutant is a small textual patch of the production code restoring a behaviour the spokes
had before (the issue describes each). `python -m tests.sim.mutants` copies the working tree to
a temporary folder, applies one mutant, runs the simulation over seeds until one fails (or a
seed limit is reached), and reports which seed caught it and how. A mutant the simulation does
not catch is a gap in the simulation, and the command exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Mutant:
    """`test`: a pytest node that must fail with the mutant instead of the simulation, when the
    simulation cannot reach the defect (said why in `defect`)."""

    name: str
    defect: str
    patches: tuple[tuple[str, str, str], ...]  # (file, old text, new text)
    test: str | None = None


MUTANTS = (
    Mutant(
        "unknown-not-held",
        "a commit in flight when etcd froze is forgotten: its address goes to another client "
        "from the journal, and etcd applies the first commit when it resumes",
        (
            (
                "spoke/dhcp/engine.py",
                "        if holder is not None and holder != r.key:\n",
                "        if False:\n",
            ),
            (
                "spoke/leases/table.py",
                "        if holder is not None and holder != client_key:\n",
                "        if False:\n",
            ),
        ),
    ),
    Mutant(
        "hung-etcd-waits",
        "a hung etcd is waited on: commits keep the client's 5 s deadline and a failed batch is "
        "retried write by write, and the etcd commits stuck in flight count against the slots "
        "of the journal path, so new clients are refused while both spokes are interrupted",
        (
            (
                "spoke/leases/store.py",
                "        self.commit_timeout = commit_timeout\n",
                "        self.commit_timeout = None\n",
            ),
            (
                "spoke/leases/store.py",
                "        except EtcdError as e:\n            return [e] * len(writes)\n",
                "        except EtcdError:\n            result = None\n"
                "        if result is None:\n"
                "            outs = await asyncio.gather(\n"
                "                *(self.commit(w) for w in writes), return_exceptions=True\n"
                "            )\n"
                "            return [o for o in outs]  # type: ignore[misc]\n",
            ),
            (
                "spoke/exchange.py",
                "        return self.inflight_by_path.get(route.committer.path, 0) < limit\n",
                "        return self.inflight < limit\n",
            ),
        ),
    ),
    Mutant(
        "session-lost-ignored",
        "a spoke whose session is gone while etcd answers stays NORMAL and never registers again",
        (("spoke/failover/machine.py", "    (S.NORMAL, K.SESSION_LOST): S.RECOVER,\n", ""),),
    ),
    Mutant(
        "renewals-stretch",
        "while interrupted, every renewal runs MCLT from now (not bounded by the expiry etcd "
        "recorded), and others reuse an address right after that expiry (no MCLT hold)",
        (
            (
                "spoke/dhcp/engine.py",
                "        bound = self._end_bound(r, ip)\n        if bound is None:\n",
                "        bound = self._end_bound(r, ip)\n        if True:\n",
            ),
            ("spoke/leases/table.py", "        self.hold = hold\n", "        self.hold = 0.0\n"),
        ),
    ),
    Mutant(
        "recover-race",
        "a journal write counts as pending only once its task runs: RECOVER can truncate the "
        "journal and go NORMAL in between, and the ACKed binding never reaches etcd. The "
        "window is one loop turn: the simulation reaches it with the crowds of new clients it "
        "sends through a short outage's healing (tests/unit/test_journal.py checks it too)",
        (
            (
                "spoke/failover/journal.py",
                "        if self._flusher is None or self._flusher.done():\n"
                "            self._flusher = loop.create_task(self._flush(), "
                'name="journal-writer")\n'
                "        return done\n",
                "        entry = self._pending.pop()\n\n"
                "        async def later() -> None:\n"
                "            self._pending.append(entry)\n"
                "            await self._flush()\n\n"
                "        self._later = loop.create_task(later())\n"
                "        return done\n",
            ),
        ),
    ),
)


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in files:
        if not name:
            continue
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def apply(mutant: Mutant, tree: Path) -> None:
    for path, old, new in mutant.patches:
        f = tree / path
        text = f.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"mutant {mutant.name}: {path} no longer has the text it patches")
        f.write_text(text.replace(old, new))


def run(
    mutant: Mutant, seeds: str, jobs: int, budget: float, horizon: float = 80.0
) -> tuple[bool, str]:
    """(caught, what the simulation printed)."""
    with tempfile.TemporaryDirectory(prefix=f"hubspoke-mutant-{mutant.name}-") as tmp:
        tree = Path(tmp)
        _copy_tree(tree)
        apply(mutant, tree)
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree)}
        if mutant.test is not None:
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", mutant.test]
            out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
            return out.returncode == 1 and " failed" in out.stdout, out.stdout + out.stderr
        cmd = [sys.executable, "-m", "tests.sim", "--seeds", seeds, "--jobs", str(jobs)]
        cmd += ["--horizon", str(horizon), "--stop-first", "--budget", str(budget), "--quiet"]
        out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        return out.returncode == 1 and "FAILED" in out.stdout, out.stdout + out.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim.mutants")
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--seeds", default="1-400")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--budget", type=float, default=300.0, help="seconds per mutant")
    ap.add_argument(
        "--horizon", type=float, default=80.0, help="virtual seconds per seed (make test's: 80)"
    )
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    missed = []
    for m in chosen:
        started = time.monotonic()
        caught, out = run(m, args.seeds, args.jobs, args.budget, args.horizon)
        took = time.monotonic() - started
        found = re.findall(r"^seed \d+ FAILED.*$|^    \S.*$", out, re.MULTILINE)
        by = f"by {m.test}" if m.test else "by the simulation"
        verdict = f"caught {by}" if caught else "NOT CAUGHT"
        print(f"{m.name}: {verdict} in {took:.0f} s ({m.defect})")
        for line in found[:4]:
            print(f"    {line.strip()}")
        if not caught:
            missed.append(m.name)
            print(out[-2000:])
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
