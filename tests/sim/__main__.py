"""Run the cluster simulation over seeds: `python -m tests.sim --seeds 1-400 [--jobs 2]`.

Re-executes itself under PYTHONHASHSEED=0 first, so a seed replays exactly in any process.
One line per seed; a seed whose run broke an invariant prints `seed N FAILED ...`, then each
violation and the seed's plan indented, and the exit status is 1. `--stop-first` stops at the
first failing seed; `--budget S` starts no new seed after S seconds (wall clock). Replay one
with `--seed N --verbose`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from tests.sim.world import run_seed, summary


def _seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def _one(seed: int, horizon: float = 200.0) -> tuple[int, list[str], str]:
    """(seed, violation lines, summary line) of one run."""
    logging.disable(logging.CRITICAL)
    world, violations = run_seed(seed, horizon=horizon)
    lines = [f"{v.kind} at {v.at:.1f}: {v.detail}" for v in violations]
    if violations:
        lines.append(f"plan: {world.plan}")
    return seed, lines, str(summary(world))


def _report(seed: int, lines: list[str], about: str, *, quiet: bool = False) -> bool:
    if lines:
        print(f"seed {seed} FAILED ({len(lines) - 1} violations)", flush=True)
        for line in lines:
            print(f"    {line}")
        return False
    if not quiet:
        print(f"seed {seed} ok {about}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--seed", type=int, help="one seed")
    pick.add_argument("--seeds", default="1-20", help="a range, e.g. 1-400")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--stop-first", action="store_true", help="stop at the first failure")
    parser.add_argument("--budget", type=float, default=None, help="wall-clock seconds")
    parser.add_argument("--verbose", action="store_true", help="log what the processes do")
    parser.add_argument("--quiet", action="store_true", help="print failing seeds only")
    parser.add_argument(
        "--horizon", type=float, default=200.0, help="virtual seconds of load and faults per seed"
    )
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, "-m", "tests.sim", *sys.argv[1:]], env)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    seeds = [args.seed] if args.seed is not None else _seeds(args.seeds)
    started = time.monotonic()
    deadline = None if args.budget is None else started + args.budget
    failed: list[int] = []
    if args.jobs <= 1:
        for seed in seeds:
            if deadline is not None and time.monotonic() > deadline:
                break
            if args.verbose:
                logging.disable(logging.NOTSET)
            if not _report(*_one(seed, args.horizon), quiet=args.quiet):
                failed.append(seed)
                if args.stop_first:
                    break
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            pending: set[Future[tuple[int, list[str], str]]] = set()
            queue = list(seeds)
            while queue or pending:
                while queue and len(pending) < args.jobs:
                    if deadline is not None and time.monotonic() > deadline:
                        queue.clear()
                        break
                    pending.add(pool.submit(_one, queue.pop(0), args.horizon))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    seed, lines, about = future.result()
                    if not _report(seed, lines, about, quiet=args.quiet):
                        failed.append(seed)
                if failed and args.stop_first:
                    for future in pending:
                        future.cancel()
                    break
    ran = f"{time.monotonic() - started:.0f} s"
    if failed:
        print(f"{len(failed)} seeds FAILED: {sorted(failed)} ({ran})")
        return 1
    print(f"all seeds passed ({ran})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
