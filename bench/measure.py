"""Runs perfdhcp against a started target: one bounded load step, the rate search, latency.

Owns the perfdhcp processes (run in the client namespace, each bounded by `-p` and a
timeout) and CPU accounting: perfdhcp's from our children's rusage, the server's from
/proc/<pid>/stat of its processes. Verdicts and limits are pure functions of the results.
"""

from __future__ import annotations

import enum
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.perfdhcp import LoadSpec, PerfdhcpReport, parse_report
from bench.stats import LatencySummary
from bench.target import BenchEnv, ServerUnderTest

DEFAULT_RATES = (
    500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 15000, 20000
)  # fmt: skip
MAX_DROP_RATIO = 0.01
GENERATOR_SHORTFALL = 0.95
MACHINE_BUSY = 0.85
ONE_CORE_BUSY = 0.9  # a server process this busy is bound by its one (Python) thread
SETTLE_S = 1.0


class Verdict(enum.Enum):
    PASS = "pass"
    DROPS = "drops"
    GENERATOR_SHORT = "generator short"


class StopReason(enum.Enum):
    FAILED_STEP = "failed step"
    LADDER_END = "top of the rate ladder"
    TIME_BUDGET = "time budget"
    SERVER_PROBLEM = "server problem"


@dataclass(frozen=True)
class StepResult:
    """One perfdhcp run and the CPU it and the server used."""

    spec: LoadSpec
    report: PerfdhcpReport
    wall_s: float
    generator_cpu_s: float
    server_cpu_s: float
    machine_busy: float = 0.0  # fraction of all cores not idle during the step (/proc/stat)
    relay_cpu_s: float = 0.0  # dhcrelay, in the relayed topology
    busiest_cpu_s: float = 0.0  # the busiest single server process

    @property
    def busiest_cores(self) -> float:
        return self.busiest_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def relay_cores(self) -> float:
        return self.relay_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def completed_rate(self) -> float:
        """ACKed exchanges per second of the test period."""
        return self.report.completed / self.spec.seconds

    @property
    def generator_cores(self) -> float:
        return self.generator_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.spec, self.report)


def verdict_of(spec: LoadSpec, report: PerfdhcpReport) -> Verdict:
    """PASS when under 1% of exchanges failed and perfdhcp started (nearly) all it should."""
    if report.hit_drop_limit or report.loss_ratio >= MAX_DROP_RATIO:
        return Verdict.DROPS
    if report.started < GENERATOR_SHORTFALL * spec.expected:
        return Verdict.GENERATOR_SHORT
    return Verdict.PASS


@dataclass(frozen=True)
class SearchResult:
    best: StepResult | None
    failed: StepResult | None
    stopped: StopReason
    steps: tuple[StepResult, ...]
    problem: str | None = None


def limit_of(search: SearchResult, cores: int) -> str:
    """One phrase on what bounded the highest rate found."""
    if search.stopped is StopReason.LADDER_END:
        return "not reached (top of the rate ladder)"
    if search.stopped is StopReason.TIME_BUDGET:
        return "not reached (time budget)"
    if search.stopped is StopReason.SERVER_PROBLEM:
        return f"server failed: {search.problem}"
    failed = search.failed
    if failed is None:
        return "unknown"
    used = f"perfdhcp {failed.generator_cores:.2f} + server {failed.server_cores:.2f}"
    if failed.relay_cpu_s > 0:
        used += f" + dhcrelay {failed.relay_cores:.2f}"
    if failed.verdict is Verdict.GENERATOR_SHORT:
        started = failed.report.started / failed.spec.seconds
        return f"load generator (perfdhcp started {started:.0f}/s; {used})"
    together = failed.generator_cores + failed.server_cores + failed.relay_cores
    busy = max(failed.machine_busy, together / cores)
    where = "machine CPU" if busy >= MACHINE_BUSY else "server (CPU to spare)"
    if busy < MACHINE_BUSY and failed.busiest_cores >= ONE_CORE_BUSY:
        where = f"one server process at {failed.busiest_cores:.2f} of a core"
    used += f", machine {busy:.0%} busy"
    gave_up = (
        f", perfdhcp gave up after {failed.report.started} exchanges"
        if failed.report.hit_drop_limit
        else ""
    )
    return (
        f"{where}: {failed.report.loss_ratio:.1%} lost at {failed.spec.rate}/s "
        f"({used} of {cores} cores{gave_up})"
    )


def _proc_cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each live process in `pids`."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
    return out


def _proc_cpu_s(pids: Sequence[int]) -> float:
    return sum(_proc_cpu_by_pid(pids).values())


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot, from /proc/stat's "cpu" line."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_step(env: BenchEnv, server: ServerUnderTest, spec: LoadSpec) -> StepResult:
    """One perfdhcp run in the client namespace, bounded by its period and a timeout."""
    pids = server.pids()
    server_before = _proc_cpu_by_pid(pids)
    relay_before = _proc_cpu_s(env.relay_pids)
    children_before = _children_cpu_s()
    busy_before, total_before = _cpu_jiffies()
    started = time.monotonic()
    proc = env.client.run(spec.argv(), check=False, timeout=spec.seconds + 30)
    wall = time.monotonic() - started
    busy_after, total_after = _cpu_jiffies()
    server_after = _proc_cpu_by_pid(pids)
    report = parse_report(proc.stdout)
    return StepResult(
        spec=spec,
        report=report,
        wall_s=wall,
        generator_cpu_s=_children_cpu_s() - children_before,
        server_cpu_s=sum(server_after.values()) - sum(server_before.values()),
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
        relay_cpu_s=_proc_cpu_s(env.relay_pids) - relay_before,
        busiest_cpu_s=max(
            (t - server_before.get(pid, t) for pid, t in server_after.items()), default=0.0
        ),
    )


def machine_busy(seconds: float = 2.0) -> float:
    """Share of all cores not idle over `seconds` (run with the target idle: other work)."""
    busy_before, total_before = _cpu_jiffies()
    time.sleep(seconds)
    busy_after, total_after = _cpu_jiffies()
    return (busy_after - busy_before) / max(1, total_after - total_before)


def spec_for(env: BenchEnv, server: ServerUnderTest, rate: int, seconds: int) -> LoadSpec:
    return LoadSpec(
        rate=rate,
        seconds=seconds,
        local_address=env.plan.client,
        server_address=server.target_address,
    )


@dataclass(frozen=True)
class LatencyResult:
    step: StepResult
    request_ack: LatencySummary | None
    discover_offer: LatencySummary | None


def measure_latency(
    env: BenchEnv, server: ServerUnderTest, rate: int = 1000, seconds: int = 5
) -> LatencyResult:
    """REQUEST->ACK and DISCOVER->OFFER percentiles at a fixed rate, from perfdhcp's stamps."""
    spec = LoadSpec(
        rate=rate,
        seconds=seconds,
        local_address=env.plan.client,
        server_address=server.target_address,
        timestamps=True,
    )
    step = run_step(env, server, spec)
    ra = step.report.request_ack_ms
    do = step.report.discover_offer_ms
    return LatencyResult(
        step=step,
        request_ack=LatencySummary.of(ra) if ra else None,
        discover_offer=LatencySummary.of(do) if do else None,
    )


def search_rate(
    env: BenchEnv,
    server: ServerUnderTest,
    *,
    rates: Sequence[int] = DEFAULT_RATES,
    seconds: int = 3,
    budget_s: float = 90.0,
) -> SearchResult:
    """Step up `rates` until a step loses 1% or more twice in a row; then try once between."""
    deadline = time.monotonic() + budget_s
    steps: list[StepResult] = []
    best: StepResult | None = None
    failed: StepResult | None = None
    stopped = StopReason.LADDER_END

    def over_budget() -> bool:
        return time.monotonic() + seconds + SETTLE_S > deadline

    for rate in rates:
        if over_budget():
            stopped = StopReason.TIME_BUDGET
            break
        step = run_step(env, server, spec_for(env, server, rate, seconds))
        steps.append(step)
        if step.verdict is not Verdict.PASS and not over_budget():
            # One retry: a single burst of drops at start-up should not end the search.
            time.sleep(SETTLE_S)
            step = run_step(env, server, spec_for(env, server, rate, seconds))
            steps.append(step)
        problem = server.check()
        if problem is not None:
            return SearchResult(best, step, StopReason.SERVER_PROBLEM, tuple(steps), problem)
        if step.verdict is Verdict.PASS:
            best = step
            time.sleep(SETTLE_S)
            continue
        failed = step
        stopped = StopReason.FAILED_STEP
        break
    if failed is not None and best is not None and not over_budget():
        middle = round((best.spec.rate + failed.spec.rate) / 2 / 250) * 250
        if best.spec.rate < middle < failed.spec.rate:
            time.sleep(SETTLE_S)
            step = run_step(env, server, spec_for(env, server, middle, seconds))
            steps.append(step)
            if step.verdict is Verdict.PASS and server.check() is None:
                best = step
            else:
                failed = step
    return SearchResult(best, failed, stopped, tuple(steps))
