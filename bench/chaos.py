"""`make chaos`: every fault under load against hubspoke and a Kea HA hot-standby pair.

Owns the run (each fault in a fresh namespace lab, bounded by a time budget), the table and
`bench/CHAOS.md`. A fault that fails its checks, or whose run broke, is reported in the table,
never dropped. Faults: `bench/chaos_hubspoke.py`, `bench/chaos_kea.py`; load and checks:
`tests/lab/chaos.py`.

    .venv/bin/python -m bench.chaos [--only SUBSTRING] [--systems hubspoke,kea] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from bench import chaos_hubspoke, chaos_kea
from tests.lab.chaos import PAUSE_S, Outcome
from tests.lab.netlab import Lab

DEFAULT_OUT = Path(__file__).resolve().parent / "CHAOS.md"
BUDGET_S = 1500.0  # the whole run (13 hubspoke faults, 2 Kea ones) stays under 25 minutes
RESERVE_S = 75.0  # do not start a fault with less than this left
RATE = 150
COMMAND = "make chaos  # = .venv/bin/python -m bench.chaos"

Runner = Callable[[Lab, Path], Outcome]

READING = """## Reading it (numbers move +-30% between runs; the bounds are docs/cluster.md's)

- A crashed spoke's clients wait for the crash probe (stream reset + refused port: ~0.2 s,
  bound 1 s); a frozen, unplugged or etcd-cut spoke's clients wait for its session TTL (3 s)
  to expire and the hub to move its buckets (~2.8-3.2 s, bound TTL + 1 s). Survivors' own
  clients never paused. A live spoke whose session is revoked is served around like a crashed
  one and is NORMAL again, with buckets, within a second.
- A spoke cut from etcd only keeps serving its buckets (MCLT leases, journaled) until its
  buckets move; after the cut it replays its journal (RECOVER) and nothing is lost.
- A spoke cut from the hub only keeps its session: nothing moves, nobody pauses.
- etcd (one member) stopped or full (NOSPACE): the first refused commit puts every spoke in
  COMMUNICATION-INTERRUPTED and it serves from its journal (MCLT leases): new clients barely
  notice (~0.1 s) an outage shorter than `max_interrupted` (30 s); past it only renewals are
  answered until etcd is back. Frozen (SIGSTOP), etcd answers nothing and refuses nothing: the
  spokes notice by keep-alive silence or commit deadlines 3-4 s in (bound `interrupted_after`
  + 2 s), then serve from their journals alike.
- A 3-member etcd that loses quorum expires every session: the spokes journal meanwhile and
  come back through RECOVER with new sessions, NORMAL within 10 s of quorum's return.
- Killing one of three etcd members with the lab's raft timings (heartbeat 50 ms, election
  500 ms) costs at most one election (~0.65 s when it was the leader). With etcd's own timings
  (100 ms, 1 s: what `deploy/` runs) losing the leader stops writes for longer than
  `interrupted_after`: commits time out and the spokes serve from their journals (~1.6-2.1 s).
- Kea HA hot-standby: the standby serves ~2.8 s after kill -9 of the primary (NOTES.md: 2.5 s)
  and ~10.9 s after the primary's link goes down (NOTES.md: ~10.5 s). In the first full run,
  the link-down fault showed 2 addresses acknowledged to two clients with overlapping validity
  and 2 ACKs missing from the standby's lease database after the primary came back; a rerun
  of that fault alone (`--systems kea --only "link down"`) showed 0 and 0, the run of
  2026-12-06 158 and 158: intermittent, 0 to 158 in three runs.
"""


def plan(systems: set[str], only: str | None) -> list[tuple[str, str, Runner]]:
    """(system, fault name, runner) for every selected fault, hubspoke first."""
    out: list[tuple[str, str, Runner]] = []
    if "hubspoke" in systems:
        for f in chaos_hubspoke.FAULTS:

            def run_h(lab: Lab, wd: Path, f: chaos_hubspoke.Fault = f) -> Outcome:
                return with_bound(chaos_hubspoke.run(f, lab, wd, rate=RATE))

            out.append((chaos_hubspoke.SYSTEM, f.name, run_h))
    if "kea" in systems:
        for k in chaos_kea.KEA_FAULTS:

            def run_k(lab: Lab, wd: Path, k: chaos_kea.KeaFault = k) -> Outcome:
                return chaos_kea.run_fault(k, lab, wd, rate=RATE)

            out.append((chaos_kea.SYSTEM, k.name, run_k))
    return [p for p in out if only is None or only.lower() in p[1].lower()]


def with_bound(r: chaos_hubspoke.FaultRun) -> Outcome:
    """The run's outcome with its published takeover bound noted; over it, the row fails."""
    bound = r.fault.bound
    if bound is None:
        return r.outcome
    measured = r.measured_s
    text = f"bound {bound.seconds:.1f} s{' after the restore' if bound.since == 'restore' else ''}"
    if r.within_bound():
        return replace(r.outcome, notes="; ".join(n for n in (r.outcome.notes, text) if n))
    shown = "never" if measured is None else f"{measured:.2f} s"
    return replace(r.outcome, error=f"over its {text} (+{bound.margin:.1f} margin): {shown}")


def failed(system: str, fault: str, error: str) -> Outcome:
    return Outcome(
        fault=fault,
        system=system,
        acks=0,
        acks_before=0,
        resume_s=None,
        resumed=False,
        survivors_gap_s=None,
        duplicates=0,
        lost=0,
        unchecked=0,
        error=error,
    )


def _seconds(o: Outcome) -> str:
    if o.resume_s is None:
        return "n/a"
    return f"{o.resume_s:.2f}" if o.resumed else f"never (>{o.resume_s:.0f})"


def _paused(o: Outcome) -> str:
    if o.survivors_gap_s is None:
        return "n/a (one server serves all)" if "kea" in o.system else "n/a (no survivor set)"
    return f"{'YES' if o.survivors_paused else 'no'} (longest gap {o.survivors_gap_s:.2f} s)"


def render(outcomes: Sequence[Outcome]) -> str:
    lines = [
        "| fault | system | new clients served again after (s) | survivors' own clients paused? "
        "| duplicates | lost leases | ACKs (before fault) | checks | notes |",
        "|---|---|---:|---|---:|---:|---:|---|---|",
    ]
    for o in outcomes:
        verdict = "pass" if o.ok else "FAIL"
        notes = o.error or o.notes
        if o.unchecked:
            notes += f"; {o.unchecked} ACKs expired before the check"
        lines.append(
            f"| {o.fault} | {o.system} | {_seconds(o)} | {_paused(o)} | {o.duplicates} | "
            f"{o.lost} | {o.acks} ({o.acks_before}) | {verdict} | {notes.replace('|', '/')} |"
        )
    return "\n".join(lines)


KEEP_MARK = "<!-- make chaos keeps everything below this line: earlier reruns and the soak runs -->"
SOAK_MARK = "## Soak"  # `make soak` runs are recorded below it


def kept_tail(path: Path) -> str:
    """What an existing CHAOS.md records below the generated part (from `KEEP_MARK`, else from
    its first `## Soak` heading): kept when the table is rewritten."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ""
    at = text.find(f"\n{KEEP_MARK}")
    if at < 0:
        at = text.find(f"\n{SOAK_MARK}")
    return "" if at < 0 else text[at:]


def write_markdown(path: Path, table: str, took: float, command: str) -> None:
    tail = kept_tail(path)
    cores = os.cpu_count()
    load = os.getloadavg()[0]
    today = datetime.date.today().isoformat()
    path.write_text(
        "# Chaos: faults under load, hubspoke vs a Kea HA hot-standby pair\n\n"
        f"```\n{command}\n```\n\n"
        f"Run {today}, {cores} cores, load average {load:.1f} at the end, {took:.0f} s in all.\n"
        f"perfdhcp behind dhcrelay, {RATE} new clients/s (`-R` 1,000,000), every ACK captured "
        "on the client side with its time, address, client, server and lease time.\n\n"
        "- **new clients served again after**: the longest gap between ACKs, from the fault to "
        "the end of the load, for the faulted server's clients (for a spoke fault: the clients "
        "of its buckets before the fault; for hub and etcd faults and for Kea: every client).\n"
        "- **survivors' own clients paused?**: the same gap for every other client; YES when "
        f"longer than {PAUSE_S:.0f} s.\n"
        "- **duplicates**: addresses acknowledged to two clients with overlapping validity, "
        "from the ACKs, or an ACK overlapping another client's binding in the store at the end.\n"
        "- **lost leases**: ACKs still valid at the end whose binding is not in etcd (after the "
        "spokes replayed their journals) or, for Kea, not in the surviving standby's lease "
        "database (`lease4-get-all`).\n\n"
        f"hubspoke: hub + 3 spokes (session TTL {chaos_hubspoke.SESSION_TTL} s, "
        f"`interrupted_after` {chaos_hubspoke.INTERRUPTED_AFTER:g} s, `max_interrupted` "
        f"{chaos_hubspoke.MAX_INTERRUPTED:g} s, MCLT {chaos_hubspoke.MCLT} s: the spoke's shipped "
        "failover timings), the hub on a host of its own, etcd 3.4 one member (or three for the "
        "member faults: the lab's raft timings, heartbeat 50 ms and election 500 ms, or etcd's "
        "own defaults where the fault says 'shipped timings'); faults act on spoke s1; "
        "each row notes the takeover bound the docs publish for it (over it, the row fails). "
        "Kea 2.2 HA hot-standby: "
        "heartbeat-delay 1,000 ms, max-response-delay 3,000 ms, max-unacked-clients 0, lease "
        "updates on; dhcrelay sends every request to both peers.\n\n"
        f"{table}\n\n{READING}{tail}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--only", help="run the faults whose name contains this")
    p.add_argument("--systems", default="hubspoke,kea")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    p.add_argument("--budget", type=float, default=BUDGET_S)
    args = p.parse_args(argv)
    runs = plan(set(args.systems.split(",")), args.only)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    root = Path(tempfile.mkdtemp(prefix="hubspoke-chaos-"))
    for i, (system, fault, runner) in enumerate(runs):
        left = args.budget - (time.monotonic() - started)
        if left < RESERVE_S:
            outcomes.append(failed(system, fault, f"not run: time budget ({left:.0f} s left)"))
            continue
        workdir = root / f"{i:02d}"
        workdir.mkdir()
        print(f"[{time.monotonic() - started:5.0f} s] {system}: {fault}", file=sys.stderr)
        try:
            with Lab("hc") as lab:
                outcome = runner(lab, workdir)
        except Exception as exc:  # a broken run is a row of the table
            traceback.print_exc()
            outcome = failed(system, fault, f"run failed: {type(exc).__name__}: {exc}"[:300])
        print(f"    {outcome}", file=sys.stderr)
        outcomes.append(outcome)
    took = time.monotonic() - started
    table = render(outcomes)
    print(table)
    command = (
        COMMAND
        if argv is None and len(sys.argv) == 1
        else "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    )
    write_markdown(args.out, table, took, command)
    print(f"written to {args.out} ({took:.0f} s); work dirs in {root}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
