"""`python -m bench.run`: the benchmark's command line and composition root.

For each chosen target: a fresh namespace lab, the server started, REQUEST->ACK latency at
1,000 exchanges/s, then a bounded rate search; the Markdown table goes to stdout and to
bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.cluster import ClusterTarget
from bench.kea import KeaHaPair, KeaServer
from bench.measure import DEFAULT_RATES, machine_busy, measure_latency, search_rate
from bench.relayed import KeaHaRelayed
from bench.report import Machine, TargetOutcome, render
from bench.spoke import SpokeServer
from bench.target import BenchEnv, ServerUnderTest, TargetFailed, TargetUnavailable
from tests.lab.netlab import Lab

# The targets `--targets` may name, in the order they run by default.
# >>> SPOKE: `SpokeServer` (bench/spoke.py) is the hubspoke target.
TARGETS: dict[str, Callable[[], ServerUnderTest]] = {
    "spoke": SpokeServer,
    "kea": KeaServer,
    "kea-ha": KeaHaPair,
    "cluster": ClusterTarget,
    "kea-ha-relay": KeaHaRelayed,
}
RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated, from: {', '.join(TARGETS)} (default: all)",
    )
    parser.add_argument("--step-seconds", type=int, default=3, help="seconds per rate step")
    parser.add_argument("--latency-seconds", type=int, default=5, help="seconds at 1,000/s")
    parser.add_argument("--latency-rate", type=int, default=1000)
    parser.add_argument(
        "--budget", type=float, default=100.0, help="seconds of rate search per target"
    )
    parser.add_argument(
        "--rates",
        default=",".join(str(r) for r in DEFAULT_RATES),
        help="the rate ladder, exchanges/s, ascending",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="Markdown results file")
    parser.add_argument("--keep", action="store_true", help="keep work dirs (configs, logs)")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {list(TARGETS)}")
    args.rates = sorted({int(r) for r in args.rates.split(",")})
    return args


def machine() -> Machine:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = subprocess.run(["perfdhcp", "-v"], capture_output=True, text=True, check=False)
    words = (version.stdout + version.stderr).split()
    return Machine(
        cores=os.cpu_count() or 1,
        cpu_model=model,
        kernel=platform.release(),
        perfdhcp=words[-1] if words else "?",
    )


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the results."""
    print(message, file=sys.stderr, flush=True)


def bench_target(server: ServerUnderTest, args: argparse.Namespace, workdir: Path) -> TargetOutcome:
    """Start one target in a lab of its own, measure it, tear everything down."""
    with Lab("hsb") as lab:
        env = BenchEnv.build(lab, workdir, relayed=server.relayed)
        try:
            progress(f"[{server.name}] starting")
            server.start(env)
            background = machine_busy()
            progress(f"[{server.name}] machine {background:.0%} busy before the load")
            progress(
                f"[{server.name}] latency at {args.latency_rate}/s for {args.latency_seconds}s"
            )
            latency = measure_latency(env, server, args.latency_rate, args.latency_seconds)
            progress(f"[{server.name}] rate search, {args.step_seconds}s per step")
            search = search_rate(
                env, server, rates=args.rates, seconds=args.step_seconds, budget_s=args.budget
            )
        except (TargetUnavailable, TargetFailed) as exc:
            return TargetOutcome(server.name, server.summary, error=str(exc))
        finally:
            server.stop()
    return TargetOutcome(
        server.name, server.summary, latency=latency, search=search, background_busy=background
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    outcomes: list[TargetOutcome] = []
    root = Path(tempfile.mkdtemp(prefix="hubspoke-bench-"))
    for name in args.targets:
        workdir = root / name
        workdir.mkdir()
        outcomes.append(bench_target(TARGETS[name](), args, workdir))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    command = "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = render(outcomes, machine(), command.strip(), when)
    text += f"\nTotal run time: {time.monotonic() - started:.0f} s.\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
