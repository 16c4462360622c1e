"""Benchmark results as Markdown: pure; no I/O (the caller prints and writes the text)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.measure import LatencyResult, SearchResult, StopReason, limit_of
from bench.stats import LatencySummary


@dataclass(frozen=True)
class TargetOutcome:
    """Everything measured for one target, or why it could not be measured."""

    name: str
    summary: str
    latency: LatencyResult | None = None
    search: SearchResult | None = None
    error: str | None = None
    background_busy: float | None = None  # machine busy with the target started and idle


@dataclass(frozen=True)
class Machine:
    cores: int
    cpu_model: str
    kernel: str
    perfdhcp: str


def _ms(summary: LatencySummary | None) -> str:
    if summary is None:
        return "n/a"
    return f"{summary.p50_ms:.3f} / {summary.p99_ms:.3f}"


def _max_rate(search: SearchResult | None) -> str:
    if search is None or search.best is None:
        return "n/a" if search is None else "< lowest step"
    rate = f"{search.best.spec.rate:,}"
    return f">= {rate}" if search.stopped is not StopReason.FAILED_STEP else rate


def _cpu_per_dora(search: SearchResult | None) -> str:
    """Server and load-side (perfdhcp + dhcrelay) CPU per completed exchange at the max rate.

    At the max rate the machine is close to saturated, so this is the cost per exchange that
    decides how far a target goes; at low rates wake-ups dominate and it reads far higher.
    """
    best = search.best if search is not None else None
    if best is None or best.report.completed <= 0:
        return "n/a"
    done = best.report.completed
    server = best.server_cpu_s / done * 1e6
    tools = (best.generator_cpu_s + best.relay_cpu_s) / done * 1e6
    return f"{server:.0f} / {tools:.0f}"


def render(outcomes: Sequence[TargetOutcome], machine: Machine, command: str, when: str) -> str:
    """The results page: a summary table, then what each target is and every load step."""
    lines = [
        f"# DHCPv4 benchmark ({when})",
        "",
        f"Machine: {machine.cores} cores ({machine.cpu_model}), kernel {machine.kernel}; "
        f"load generator perfdhcp {machine.perfdhcp} in a client namespace, "
        "each server in its own namespace, one bridged segment (relayed targets: perfdhcp on "
        "an edge segment behind dhcrelay, the servers on a LAN).",
        f"Command: `{command}`",
        "",
        "| target | max rate, < 1% lost (DORA/s) | what limited it "
        "| CPU per DORA at the max rate, server / perfdhcp + dhcrelay (us) "
        "| REQUEST->ACK p50 / p99 at 1,000/s (ms) | DISCOVER->OFFER p50 / p99 (ms) "
        "| lost at 1,000/s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        if o.error is not None:
            lines.append(f"| {o.name} | n/a | {o.error} | n/a | n/a | n/a | n/a |")
            continue
        limit = limit_of(o.search, machine.cores) if o.search else "n/a"
        lat = o.latency
        lost = f"{lat.step.report.lost} of {lat.step.report.started}" if lat is not None else "n/a"
        lines.append(
            f"| {o.name} | {_max_rate(o.search)} | {limit} | {_cpu_per_dora(o.search)} "
            f"| {_ms(lat.request_ack if lat else None)} "
            f"| {_ms(lat.discover_offer if lat else None)} | {lost} |"
        )
    lines += ["", "## Targets", ""]
    lines += [
        f"- **{o.name}**: {o.summary}"
        + (
            f" (before its load: machine {o.background_busy:.0%} busy, which is other work)"
            if o.background_busy is not None
            else ""
        )
        for o in outcomes
    ]
    lines += [
        "",
        "## Load steps",
        "",
        "Rate: target exchanges/s for the step; started/completed: DISCOVERs sent / ACKs received;",
        "cores: CPU time over wall time of the step (perfdhcp, every server process together, the",
        "busiest single server process, dhcrelay in the relayed targets);",
        "machine busy: share of all cores not idle during the step (/proc/stat).",
        "",
        "| target | rate | started | completed | lost | perfdhcp cores | server cores "
        "| busiest server process | dhcrelay cores | machine busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        steps = list(o.search.steps) if o.search else []
        if o.latency is not None:
            steps.insert(0, o.latency.step)
        for s in steps:
            tag = " (latency)" if o.latency is not None and s is o.latency.step else ""
            lines.append(
                f"| {o.name} | {s.spec.rate:,}{tag} | {s.report.started:,} "
                f"| {s.report.completed:,} | {s.report.loss_ratio:.2%} "
                f"| {s.generator_cores:.2f} | {s.server_cores:.2f} "
                f"| {s.busiest_cores:.2f} | {s.relay_cores:.2f} | {s.machine_busy:.0%} |"
            )
    return "\n".join(lines) + "\n"
