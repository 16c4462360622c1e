"""`make soak`: one cluster under steady load for a long time, a random fault every 30-90 s.

Owns the soak run and its report. One cluster (`bench.chaos_hubspoke.build`: the hub on a host
of its own, three spokes with the shipped failover timings, a 3-member etcd with a backend quota
and auto-compaction, the relayed scope's leases 30 s), perfdhcp behind dhcrelay for the whole run
(new clients and renewals) with every ACK and NAK captured. Every 30-90 s (seeded: the seed is
printed and written, and `--seed` replays the same sequence of faults and waits) one fault of
`bench.chaos_hubspoke.FAULTS`, or a spoke cut from etcd for three lease times, is injected, held,
undone and repaired (what it killed is restarted); then the run waits (bounded) until the
cluster is whole again: every spoke NORMAL with its journal replayed, live with buckets in the
hub's view. After each fault etcd is read and checked against the ACKs so far.

Reported (stdout and `--out`): addresses ACKed to two clients with overlapping validity (from the
ACKs, and against etcd), ACKed bindings missing from etcd while they ran, failed renewals (a NAK,
or another address, for a renewal of a lease still running; unanswered ones apart), the
worst new-client wait per fault kind against its published bound, the RSS of every process at
the start, half-way, its peak and at the end, error-level log lines and asyncio errors. Not part
of `make test`. Faults are drawn from a shuffled bag: each kind once in every 14 faults.

    .venv/bin/python -m bench.soak [--minutes 30] [--seed N] [--rate 100] [--renew-rate 20]
                                   [--out FILE] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos_hubspoke import (
    FAULTS,
    INTERRUPTED_AFTER,
    MAX_INTERRUPTED,
    MCLT,
    SESSION_TTL,
    Cluster,
    Fault,
    Setup,
    build,
    long_cut,
    settle,
)
from tests.lab import asyncio_audit
from tests.lab.chaos import (
    Ack,
    LoadRun,
    Nak,
    Renewal,
    longest_gap,
    lost_acks,
    overlapping_acks,
    store_conflicts,
)
from tests.lab.netlab import Lab

LEASE = 30  # the relayed scope's lease time: addresses cycle (lease + MCLT + reuse delay)
QUOTA_BYTES = 64 * 1024 * 1024  # room for the run's bindings; filled for the NOSPACE fault
ETCD_ARGS = (
    f"--quota-backend-bytes={QUOTA_BYTES}",
    "--auto-compaction-mode=periodic",
    "--auto-compaction-retention=5m",
)
GAP_S = (30.0, 90.0)  # between the end of one fault's healing and the next fault
HEAL_S = 120.0  # at most this long for the cluster to be whole again after a fault
RATE = 100  # new clients a second
RENEW_RATE = 20  # renewals a second (perfdhcp renews leases it holds)
RESERVE_S = 60.0  # no fault starts unless it ends this long before the load does (healing)
SOAK_FAULTS: tuple[Fault, ...] = (*FAULTS, long_cut(LEASE))


@dataclass
class FaultRecord:
    """One fault of the run, with its times (wall clock) and whose clients it concerned."""

    fault: Fault
    at: float
    restored_at: float = 0.0
    healed_at: float | None = None  # None: not whole again within HEAL_S
    victim_buckets: frozenset[int] | None = None
    error: str = ""
    lost: int = 0  # ACKed bindings missing from etcd at the check after it
    conflicts: int = 0  # ACKs overlapping another client's binding in etcd at that check

    @property
    def kind(self) -> str:
        return self.fault.kind or self.fault.name


@dataclass
class Memory:
    """RSS (KiB) of each process: at the start, the peak sampled, half-way, at the end; how
    many times each was started."""

    start: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    middle: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)


class FaultBag:
    """Seeded draws from every fault kind without replacement, refilled when empty: each kind
    comes once in every len(faults) draws, in a random order."""

    def __init__(self, faults: Sequence[Fault], rng: random.Random) -> None:
        self.faults = list(faults)
        self.rng = rng
        self.left: list[Fault] = []

    def draw(self) -> Fault:
        if not self.left:
            self.left = list(self.faults)
            self.rng.shuffle(self.left)
        return self.left.pop()


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def processes(c: Cluster) -> dict[str, int | None]:
    """Every process of the cluster: hub, spokes, etcd members (PID, None when not running)."""
    out: dict[str, int | None] = {}
    for name, proc in [*c.cl.hubs.items(), *c.cl.spokes.items()]:
        out[name] = proc.popen.pid if proc.alive and proc.popen is not None else None
    for i, server in enumerate(c.cl.etcd_servers):
        out[f"etcd-e{i + 1}"] = server.pid
    return out


def sample(c: Cluster, memory: Memory, into: dict[str, int]) -> None:
    for name, pid in processes(c).items():
        kib = rss_kib(pid)
        if kib is not None:
            into[name] = kib
            memory.peak[name] = max(memory.peak.get(name, 0), kib)


def whole(c: Cluster) -> bool:
    """Every process running, every spoke NORMAL with an empty journal, live with buckets."""
    if not all(p.alive for p in [*c.cl.spokes.values(), *c.cl.hubs.values()]):
        return False
    if any(s.pid is None for s in c.cl.etcd_servers):
        return False
    if settle(c, within=1.0):
        return False
    try:
        return c.balanced()
    except (RuntimeError, ValueError, KeyError):
        return False


def wait_whole(c: Cluster, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if whole(c):
            return True
        time.sleep(1.0)
    return False


# -- the verdict (pure) -----------------------------------------------------------------------
def new_client_times(acks: Iterable[Ack]) -> list[tuple[float, int]]:
    """(time, bucket) of each client's first ACK: a new client served (renewals left out)."""
    first: dict[str, Ack] = {}
    for a in sorted(acks, key=lambda a: a.at):
        first.setdefault(a.mac, a)
    return [(a.at, a.bucket) for a in first.values()]


def worst_wait(
    rec: FaultRecord, new: Sequence[tuple[float, int]], window_end: float
) -> float | None:
    """The longest wait of a new client of the faulted side, from the fault (or its restore,
    for a bound counted from there) to `window_end`; None when none was served in it."""
    bound = rec.fault.bound
    start = rec.restored_at if bound is not None and bound.since == "restore" else rec.at
    times = [t for t, b in new if rec.victim_buckets is None or b in rec.victim_buckets]
    gap, served = longest_gap(times, start, window_end)
    return gap if served else None


@dataclass(frozen=True)
class Renewals:
    """What became of the renewals the load sent, matched to replies by client and xid."""

    running: int = 0  # renewals of a lease still running (per the client's last ACK)
    acked: int = 0
    naked: int = 0  # NAKed and not ACKed
    unanswered: int = 0  # perfdhcp does not retry; a real client would, then rebind
    contradictory: int = 0  # ACKed by one server and NAKed by another
    moved: int = 0  # ACKed with another address
    expired: int = 0  # renewals of a lease already over (perfdhcp renews those too)

    @property
    def failed(self) -> int:
        """A client whose lease still ran told to stop using it, or given another address."""
        return self.naked + self.moved


def renewal_verdict(
    acks: Sequence[Ack], naks: Sequence[Nak], renewals: Sequence[Renewal]
) -> Renewals:
    by_mac: dict[str, list[Ack]] = {}
    for a in sorted(acks, key=lambda a: a.at):
        by_mac.setdefault(a.mac, []).append(a)
    acked = {(a.mac, a.xid): a for a in acks if a.xid}
    naked = {(n.mac, n.xid) for n in naks if n.xid}
    counts = Counter[str]()
    for r in renewals:
        held = [a for a in by_mac.get(r.mac, []) if a.at < r.at]
        if not held or held[-1].ip != r.ip or held[-1].until <= r.at:
            counts["expired"] += 1
            continue
        counts["running"] += 1
        ack = acked.get((r.mac, r.xid))
        nak = (r.mac, r.xid) in naked
        if ack is not None and nak:
            counts["contradictory"] += 1
        elif ack is not None:
            counts["moved" if ack.ip != r.ip else "acked"] += 1
        elif nak:
            counts["naked"] += 1
        else:
            counts["unanswered"] += 1
    return Renewals(**counts)


def renewal_stats(perf_output: str) -> dict[str, int]:
    """perfdhcp's 'REQUEST-ACK (renewal)' counters: sent, received, drops."""
    out: dict[str, int] = {}
    section = perf_output.split("REQUEST-ACK (renewal)", 1)
    if len(section) < 2:
        return out
    for line in section[1].splitlines()[1:12]:
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("sent packets", "received packets", "drops"):
            out[key.strip()] = int(float(value.strip()))
    return out


def log_errors(c: Cluster) -> tuple[Counter[str], int]:
    """Error-level log events by name across hub and spokes; asyncio error lines."""
    events: Counter[str] = Counter()
    asyncio_lines = 0
    for name, proc in [*c.cl.hubs.items(), *c.cl.spokes.items()]:
        for e in proc.events():
            if str(e.get("level", "")).lower() in ("error", "critical"):
                events[f"{name}: {str(e.get('event', ''))[:60]}"] += 1
        asyncio_lines += len(asyncio_audit.log_errors(proc.log_path))
    return events, asyncio_lines


# -- the run --------------------------------------------------------------------------------------
@dataclass
class Soak:
    seed: int
    minutes: float
    rate: int
    renew_rate: int
    records: list[FaultRecord] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    started: float = 0.0
    ended: float = 0.0
    acks: list[Ack] = field(default_factory=list)
    naks: list[Nak] = field(default_factory=list)
    renewals: list[Renewal] = field(default_factory=list)
    perf_output: str = ""
    error: str = ""
    lost: set[tuple[str, str]] = field(default_factory=set)
    conflicts: set[tuple[str, str]] = field(default_factory=set)
    final_duplicates: int = 0
    log_events: Counter[str] = field(default_factory=Counter)
    asyncio_lines: int = 0
    exited: dict[str, str] = field(default_factory=dict)  # process -> exit code and log tail


def check_store(c: Cluster, load: LoadRun, soak: Soak, rec: FaultRecord | None) -> None:
    """Bindings in etcd against every ACK captured before the cluster was last whole: one
    still running must be there for its client, and none may overlap another client's."""
    cutoff = time.time() - 1.0
    acks = [a for a in load.acks() if a.at < cutoff]
    store = c.store()
    read_at = time.time()
    lost = {(a.ip, a.mac) for a in lost_acks(acks, store, read_at)}
    conflicts = {(a.ip, a.mac) for a, _ in store_conflicts(acks, store)}
    if rec is not None:
        rec.lost = len(lost - soak.lost)
        rec.conflicts = len(conflicts - soak.conflicts)
    soak.lost |= lost
    soak.conflicts |= conflicts


def run(
    soak: Soak,
    lab: Lab,
    workdir: Path,
    log: Callable[[str], None],
    sequence: Sequence[Fault] = (),
) -> None:
    """The run. `sequence`: these faults in this order (then the run ends), instead of random
    ones until the time is up; the waits between them still come from the seed."""
    rng = random.Random(soak.seed)
    bag = FaultBag(SOAK_FAULTS, rng)
    queue = list(sequence)
    setup = Setup(etcd_members=3, etcd_args=ETCD_ARGS, lease_time=LEASE)
    c = build(lab, workdir, setup)
    seconds = round(soak.minutes * 60)
    load = LoadRun(c.perf, workdir / "acks.txt")
    load.start(rate=soak.rate, seconds=seconds, renew_rate=soak.renew_rate)
    soak.started = load.started_at
    half_way = load.started_at + seconds / 2
    time.sleep(10.0)  # the load settles before the first sample
    sample(c, soak.memory, soak.memory.start)
    log(f"load started: {soak.rate} new clients/s + {soak.renew_rate} renewals/s, {seconds} s")
    try:
        while True:
            if sequence and not queue:
                time.sleep(GAP_S[0])  # new clients after the last one
                break
            wait = rng.uniform(*GAP_S)
            fault = queue.pop(0) if queue else bag.draw()
            if time.time() + wait + fault.hold + RESERVE_S > load.ends_at:
                break
            time.sleep(wait)
            rec = FaultRecord(fault, at=time.time())
            rec.victim_buckets = c.buckets_of(fault.victim) if fault.victim else None
            soak.records.append(rec)
            log(f"fault {len(soak.records)}: {fault.name} (hold {fault.hold:g} s)")
            try:
                fault.inject(c)
                time.sleep(max(0.0, rec.at + fault.hold - time.time()))
            except Exception as exc:  # a broken injection is reported, the run goes on
                rec.error = f"inject: {type(exc).__name__}: {exc}"[:200]
            finally:
                try:
                    fault.restore(c)
                    rec.restored_at = time.time()
                    fault.repair(c)
                except Exception as exc:
                    rec.error += f" restore: {type(exc).__name__}: {exc}"[:200]
                    rec.restored_at = rec.restored_at or time.time()
            if wait_whole(c, HEAL_S):
                rec.healed_at = time.time()
                check_store(c, load, soak, rec)
            else:
                rec.error += f" not whole again in {HEAL_S:.0f} s"
            middle = soak.memory.middle
            sample(c, soak.memory, middle if not middle and time.time() > half_way else {})
            healed = (
                "never" if rec.healed_at is None else f"{rec.healed_at - rec.restored_at:.1f} s"
            )
            log(
                f"    restored after {rec.restored_at - rec.at:.1f} s, whole again {healed} "
                f"later; lost {rec.lost}, conflicts {rec.conflicts} {rec.error}"
            )
    finally:
        soak.perf_output = load.wait(slack=RESERVE_S + 60, now=bool(sequence))
        soak.ended = time.time()
        settle(c)
        if wait_whole(c, HEAL_S):
            check_store(c, load, soak, None)
        sample(c, soak.memory, soak.memory.end)
        soak.memory.starts = {n: p.starts for n, p in [*c.cl.hubs.items(), *c.cl.spokes.items()]}
        for name, proc in [*c.cl.hubs.items(), *c.cl.spokes.items()]:
            if proc.popen is not None and proc.popen.poll() is not None:
                tail = " / ".join(line[:160] for line in proc.tail(4).splitlines())
                soak.exited[name] = f"exit {proc.popen.returncode}: {tail}"
        soak.acks = load.acks()
        soak.naks = load.naks()
        soak.renewals = load.renewals()
        soak.final_duplicates = len(store_conflicts(soak.acks, c.store()))
        soak.log_events, soak.asyncio_lines = log_errors(c)


# -- the report -----------------------------------------------------------------------------------
def render(soak: Soak, command: str, took: float) -> str:
    acks, naks = soak.acks, soak.naks
    dup_pairs = overlapping_acks(acks)
    dup_ips = {b.ip for _, b in dup_pairs}
    ren = renewal_verdict(acks, naks, soak.renewals)
    renew = renewal_stats(soak.perf_output)
    new = new_client_times(acks)
    per_kind: dict[str, list[tuple[FaultRecord, float | None]]] = {}
    for i, rec in enumerate(soak.records):
        nxt = soak.records[i + 1].at if i + 1 < len(soak.records) else soak.ended
        per_kind.setdefault(rec.kind, []).append((rec, worst_wait(rec, new, nxt)))
    over = 0
    rows = []
    for kind, items in sorted(per_kind.items()):
        waits = [w for _, w in items if w is not None]
        never = sum(1 for _, w in items if w is None)
        bound = items[0][0].fault.bound
        n_over = sum(1 for _, w in items if bound is not None and (w is None or w > bound.limit))
        over += n_over
        heals = [r.healed_at - r.restored_at for r, _ in items if r.healed_at is not None]
        worst = (f"{max(waits):.2f}" if waits else "-") + (f" ({never} never)" if never else "")
        shown = "-" if bound is None else f"{bound.seconds:g} (+{bound.margin:g})"
        heal = f"{max(heals):.1f}" if len(heals) == len(items) else "never"
        lost = sum(r.lost + r.conflicts for r, _ in items)
        errors = sum(1 for r, _ in items if r.error)
        rows.append(
            f"| {kind} | {len(items)} | {worst} | {shown} | {n_over} | {heal} | {lost} | {errors} |"
        )
    mem = soak.memory
    mem_rows = [
        f"| {name} | {mem.start.get(name, 0) / 1024:.0f} | {mem.middle.get(name, 0) / 1024:.0f} | "
        f"{mem.peak.get(name, 0) / 1024:.0f} | {mem.end.get(name, 0) / 1024:.0f} | "
        f"{mem.starts.get(name, '-')} |"
        for name in sorted(set(mem.start) | set(mem.end))
    ]
    new_total = len(new)
    lines = [
        f"## Soak: {soak.minutes:g} minutes, seed {soak.seed}",
        "",
        f"```\n{command}\n```",
        "",
        f"Run {datetime.date.today().isoformat()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end, {took:.0f} s in all. Hub + 3 spokes (session TTL "
        f"{SESSION_TTL} s, `interrupted_after` {INTERRUPTED_AFTER:g} s, `max_interrupted` "
        f"{MAX_INTERRUPTED:g} s, MCLT {MCLT} s), etcd of 3 members (lab raft timings; backend "
        f"quota {QUOTA_BYTES >> 20} MiB, auto-compaction every 5 min), relayed scope of 16,384 "
        "addresses "
        f"with {LEASE} s leases; perfdhcp behind dhcrelay, {soak.rate} new clients/s + "
        f"{soak.renew_rate} renewals/s; {len(soak.records)} faults, one every "
        f"{GAP_S[0]:.0f}-{GAP_S[1]:.0f} s after the cluster was whole again.",
        "",
        f"- ACKs captured: {len(acks)} ({new_total} new clients); NAKs: {len(naks)}",
        f"- **duplicates**: {len(dup_ips)} addresses ACKed to two clients with overlapping "
        f"validity; {len(soak.conflicts)} ACKs overlapping another client's binding in etcd at "
        f"the checks after each fault; {soak.final_duplicates} at the end",
        f"- **lost ACKed bindings**: {len(soak.lost)} (an ACK still running, missing from etcd "
        f"for its client, at the check after each fault and at the end)",
        f"- **failed renewals**: {ren.failed} (of {ren.running} renewals of a lease still "
        f"running: {ren.naked} NAKed, {ren.moved} given another address; {ren.acked} ACKed, "
        f"{ren.contradictory} ACKed by one spoke and NAKed by another, {ren.unanswered} "
        "unanswered: perfdhcp does not retry, a real client retries and rebinds; a relayed "
        "renewal goes to its bucket's owner, unanswered while a silent spoke's buckets have "
        f"not moved). {ren.expired} renewals of leases already over (perfdhcp renews those "
        f"too) are left out; perfdhcp's own count: sent {renew.get('sent packets', '?')}, "
        f"answered {renew.get('received packets', '?')}",
        f"- **faults over their published bound**: {over}",
        f"- **processes that exited by themselves**: {len(soak.exited)}"
        + "".join(f"; {name} ({why})" for name, why in sorted(soak.exited.items())),
        f"- error-level log lines: {sum(soak.log_events.values())}"
        + (
            f" ({', '.join(f'{k} x{v}' for k, v in soak.log_events.most_common(6))})"
            if soak.log_events
            else ""
        )
        + f"; asyncio error lines: {soak.asyncio_lines}",
        *([f"- run error: {soak.error}"] if soak.error else []),
        "",
        "Worst new-client wait per fault kind (s): the longest time without a new client of the "
        "faulted side served (its buckets' for a spoke fault, everyone's otherwise), from the "
        "fault (from its end for quorum loss) to the next fault.",
        "",
        "| fault kind | times | worst wait (s) | bound (s) | over bound | whole again after "
        "restore (worst, s) | lost | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Memory (RSS, MiB) of every process: at the start (10 s into the load), after the first "
        "fault past half-way, the peak sampled after each fault, at the end; a process restarted "
        "by a fault is measured as it runs then (starts: how many times it was started). The "
        "spokes' binding replicas fill while the run uses the pool's 16,384 addresses (never used "
        "ones first); etcd's RSS holds its memory-mapped database, which the out-of-space fault "
        "fills to the quota.",
        "",
        "| process | start | half-way | peak | end | starts |",
        "|---|---:|---:|---:|---:|---:|",
        *mem_rows,
        "",
        "Faults in order: "
        + "; ".join(
            f"{i + 1}. {r.kind} at {r.at - soak.started:.0f} s"
            + (f" ({r.error.strip()})" if r.error else "")
            for i, r in enumerate(soak.records)
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=None, help="default: a new one (printed)")
    p.add_argument("--rate", type=int, default=RATE)
    p.add_argument("--renew-rate", type=int, default=RENEW_RATE)
    p.add_argument("--out", type=Path, default=None, help="also write the report here")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--faults",
        default="",
        help="comma-separated fault kinds to run in this order, then stop (e.g. to replay a "
        f"sequence): {', '.join(f.kind for f in SOAK_FAULTS)}",
    )
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    kinds = {f.kind: f for f in SOAK_FAULTS}
    wanted = [k for k in args.faults.split(",") if k]
    unknown = [k for k in wanted if k not in kinds]
    if unknown:
        p.error(f"unknown fault kinds {unknown}; known: {sorted(kinds)}")
    sequence = [kinds[k] for k in wanted]
    print(f"soak: seed {seed}, {args.minutes:g} minutes", file=sys.stderr, flush=True)
    soak = Soak(seed, args.minutes, args.rate, args.renew_rate)
    started = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {text}", file=sys.stderr, flush=True)

    root = Path(tempfile.mkdtemp(prefix="hubspoke-soak-"))
    try:
        with Lab("hk") as lab:
            run(soak, lab, root, log, sequence)
    except Exception as exc:  # the report still says what was seen
        traceback.print_exc()
        soak.error = f"{type(exc).__name__}: {exc}"[:300]
    took = time.monotonic() - started
    command = (
        f"make soak MINUTES={args.minutes:g} SEED={seed}"
        f"  # = .venv/bin/python -m bench.soak --minutes {args.minutes:g} --seed {seed}"
    )
    report = render(soak, command, took)
    print(report)
    if args.out is not None:
        args.out.write_text(report)
        print(f"written to {args.out}", file=sys.stderr)
    summary = {
        "seed": seed,
        "faults": len(soak.records),
        "duplicates": len({b.ip for _, b in overlapping_acks(soak.acks)})
        + len(soak.conflicts)
        + soak.final_duplicates,
        "lost": len(soak.lost),
        "exited": sorted(soak.exited),
        "failed_renewals": renewal_verdict(soak.acks, soak.naks, soak.renewals).failed,
    }
    print(json.dumps(summary), file=sys.stderr)
    if args.keep:
        print(f"work directory: {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    failures = ("duplicates", "lost", "failed_renewals", "exited")
    clean = not soak.error and not any(summary[k] for k in failures)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
