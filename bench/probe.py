"""`python -m bench.probe`: where a hubspoke target's CPU and latency go at fixed rates.

The rate search (`bench.run`) says how far a target goes; this says what each process and
each thread of it spends on the way. For the `spoke` or `cluster` target in a fresh lab it
runs perfdhcp at each given rate for a bounded number of seconds and prints, per step: what
perfdhcp completed and lost, REQUEST->ACK p50/p99, the machine's busy share, and for every
process (spokes by node name, etcd, hub, dhcrelay) its CPU in cores and for each hubspoke
process its threads' CPU and context switches per second (`/proc/<pid>/task/*`). For the
spoke it also prints how long its etcd commits took (`hubspoke_etcd_commit_seconds`,
scraped from the spoke's metrics endpoint inside its namespace).

    python -m bench.probe --target spoke --rates 1000,3000
    python -m bench.probe --target cluster --rates 1000,2500 --seconds 5

Needs root, perfdhcp, etcd, dhcrelay (cluster), like `bench.run`. Every load is bounded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench.spoke as bench_spoke
from bench.cluster import ClusterTarget
from bench.measure import _proc_cpu_by_pid, measure_latency
from bench.target import BenchEnv, ServerUnderTest
from tests.lab.netlab import Lab

METRICS_PORT = 9167
TICK = os.sysconf("SC_CLK_TCK")

ThreadSample = dict[tuple[str, str], tuple[float, int]]  # (tid, name) -> (cpu s, switches)


def threads_of(pid: int) -> ThreadSample:
    """CPU seconds and context switches (voluntary + not) of each thread of `pid`."""
    out: ThreadSample = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
        )
        out[(tid, name)] = ((int(fields[11]) + int(fields[12])) / TICK, switches)
    return out


def describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode(errors="replace") for a in argv if a]
    if "spoke.main" in words:
        config = Path(words[words.index("--config") + 1])
        return f"spoke {config.stem}" if config.stem != "spoke" else "spoke"
    if "hub.main" in words:
        return "hub"
    return Path(words[0]).name if words else str(pid)


def counters(text: str, name: str) -> dict[str, float]:
    """`name`'s samples by their label text, from a Prometheus exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            out[labels] = float(value)
    return out


def commit_histogram(scrape: Callable[[], str]) -> dict[str, float]:
    """Cumulative `hubspoke_etcd_commit_seconds` bucket counts by upper bound."""
    out: dict[str, float] = {}
    for line in scrape().splitlines():
        if line.startswith("hubspoke_etcd_commit_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def probe_step(
    env: BenchEnv,
    target: ServerUnderTest,
    rate: int,
    seconds: int,
    scrape: Callable[[], str] | None,
) -> None:
    pids = [*target.pids(), *env.relay_pids]
    names = {pid: describe(pid) for pid in pids}
    python = [pid for pid in pids if names[pid].startswith(("spoke", "hub"))]
    cpu_before = _proc_cpu_by_pid(pids)
    threads_before = {pid: threads_of(pid) for pid in python}
    hist_before = commit_histogram(scrape) if scrape else {}
    drops_before = counters(scrape(), "hubspoke_dhcp_drops_total") if scrape else {}
    started = time.monotonic()
    measured = measure_latency(env, target, rate, seconds)
    step = measured.step
    wall = time.monotonic() - started
    ra = measured.request_ack
    p50, p99 = (ra.p50_ms, ra.p99_ms) if ra is not None else (float("nan"), float("nan"))
    print(
        f"rate {rate}/s for {seconds} s: completed {step.completed_rate:.0f}/s, lost "
        f"{step.report.loss_ratio:.2%}, REQUEST->ACK p50 {p50:.2f} ms p99 {p99:.2f} "
        f"ms, machine {step.machine_busy:.0%} busy, perfdhcp {step.generator_cores:.2f} cores"
    )
    cpu_after = _proc_cpu_by_pid(pids)
    for pid in pids:
        cores = (cpu_after.get(pid, 0.0) - cpu_before.get(pid, 0.0)) / wall
        print(f"  {names[pid]:<12} {cores:5.2f} cores")
        if pid not in threads_before:
            continue
        before = threads_before[pid]
        for key, (cpu, switches) in sorted(threads_of(pid).items()):
            cpu0, sw0 = before.get(key, (0.0, 0))
            if cpu - cpu0 > 0.005 or switches - sw0 > wall * 50:
                print(
                    f"      thread {key[1]:<14} {(cpu - cpu0) / wall:5.2f} cores "
                    f"{(switches - sw0) / wall:8.0f} context switches/s"
                )
    if scrape:
        after = commit_histogram(scrape)
        total = after.get("+Inf", 0.0) - hist_before.get("+Inf", 0.0)
        if total:
            shares = ", ".join(
                f"<={le}s {(n - hist_before.get(le, 0.0)) / total:.1%}"
                for le, n in after.items()
                if le in ("0.001", "0.0025", "0.005", "0.01", "0.025")
            )
            print(f"  etcd commits: {total:.0f}, {shares}")
        drops = counters(scrape(), "hubspoke_dhcp_drops_total")
        moved = {k: v - drops_before.get(k, 0.0) for k, v in drops.items()}
        shown = ", ".join(f"{k} {v:.0f}" for k, v in sorted(moved.items()) if v)
        print("  drops:", shown or "none")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=("spoke", "cluster"), default="spoke")
    p.add_argument("--rates", default="1000,2500", help="comma-separated exchanges/s")
    p.add_argument("--seconds", type=int, default=5, help="seconds per step (1..30)")
    args = p.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",")]
    if not 1 <= args.seconds <= 30 or not all(0 < r <= 20000 for r in args.rates):
        p.error("--seconds must be 1..30 and each rate 1..20000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="hubspoke-probe-"))
    original = bench_spoke.spoke_config

    def with_metrics(**kwargs: Any) -> dict[str, Any]:
        config = original(**kwargs)
        config["metrics"] = {"listen": f"127.0.0.1:{METRICS_PORT}"}
        return config

    target: ServerUnderTest
    if args.target == "spoke":
        bench_spoke.spoke_config = with_metrics
        target = bench_spoke.SpokeServer()
    else:
        target = ClusterTarget()
    try:
        with Lab("hsp") as lab:
            env = BenchEnv.build(lab, workdir, relayed=target.relayed)
            target.start(env)
            try:
                scrape = None
                if isinstance(target, bench_spoke.SpokeServer):
                    host = target.hosts()[-1]

                    def scrape() -> str:
                        code = (
                            "import urllib.request;print(urllib.request.urlopen("
                            f"'http://127.0.0.1:{METRICS_PORT}/metrics').read().decode())"
                        )
                        return subprocess.run(
                            host.argv([sys.executable, "-c", code]),
                            capture_output=True, text=True, timeout=10, check=False,
                        ).stdout  # fmt: skip

                for rate in args.rates:
                    probe_step(env, target, rate, args.seconds, scrape)
            finally:
                target.stop()
    finally:
        bench_spoke.spoke_config = original
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
