"""`python -m bench.scale`: how a spoke starts with many stored bindings (issue 15).

For each count N (`--counts`, default 0,100000,1000000): a fresh one-member etcd on loopback,
N bindings written in the project's format (`tests.lab.bulkleases`: transactions of 128 puts,
several in flight), then a standalone spoke process (`python -m spoke.main`) on `lo` whose one
scope holds a pool of 2^20 addresses (16,384 blocks of 64) with the shipped session TTL (3 s).
Measured per start: seconds from the process start to its ready file (it serves DHCP from
then on), resident memory at ready (VmRSS), bytes per binding over the empty case, and the
event loop's worst lag during start (the spoke's `spoke.ready` log line, `loop_lag_max_s`).
Each count is started twice: `first` (claims every block) and `restart` (finds them claimed).

No root needed, no namespace: etcd and the spoke listen on 127.0.0.1 only. Progress goes to
stderr, one JSON line per start to stdout, a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml

from hubspoke.etcd.client import EtcdClient
from hubspoke.keys import DEFAULT_ROOT, Keys
from tests.lab.bulkleases import store_bindings
from tests.lab.etcd import EtcdServer, free_port, free_udp_port

SCOPE = "big"
POOL_FIRST = IPv4Address("127.16.0.0")
POOL_LAST = IPv4Address("127.31.255.255")  # 2^20 addresses: room for 1,000,000 bindings
NODE = "scale-1"
QUOTA = 8 << 30  # etcd's backend quota: a million bindings need more than the 2 GiB default


@dataclass
class Start:
    count: int
    kind: str  # first | restart
    write_s: float | None
    ready_s: float | None
    rss_mib: float | None
    bytes_per_binding: float | None
    loop_lag_max_s: float | None
    db_mib: float | None
    outcome: str


def progress(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def spoke_config(etcd: EtcdServer, workdir: Path, session_ttl: int) -> dict[str, Any]:
    return {
        "node": NODE,
        "mode": "standalone",
        "cluster": {"session_ttl": session_ttl},
        "etcd": {"endpoints": [etcd.endpoint], "root": DEFAULT_ROOT},
        "dhcp": {"interfaces": ["lo"], "port": free_udp_port(), "client_port": free_udp_port()},
        "failover": {"journal": str(workdir / f"{NODE}.journal")},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "log": {"level": "info", "format": "json"},
        "scopes": [
            {
                "name": SCOPE,
                "subnet": "127.0.0.0/8",
                "pools": [f"{POOL_FIRST}-{POOL_LAST}"],
                "interfaces": ["lo"],
            }
        ],
    }


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def ready_event(log_path: Path) -> dict[str, Any] | None:
    for line in log_path.read_text(errors="replace").splitlines():
        if '"spoke.ready"' in line:
            with_fields: dict[str, Any] = json.loads(line)
            return with_fields
    return None


def run_spoke(
    workdir: Path, config: dict[str, Any], timeout: float
) -> tuple[str, float | None, int | None, dict[str, Any] | None]:
    """Start the spoke and wait for its ready file: (outcome, seconds, VmRSS KiB, ready line)."""
    config_path = workdir / "spoke.yaml"
    config_path.write_text(yaml.safe_dump(config))
    ready = workdir / "ready"
    ready.unlink(missing_ok=True)
    log_path = workdir / "spoke.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "spoke.main", "--config", str(config_path),
             "--ready-file", str(ready)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            while not ready.exists():
                if proc.poll() is not None:
                    text = log_path.read_text(errors="replace")
                    errors = re.findall(r"hubspoke\.etcd\.errors\.(\w+)", text)
                    why = errors[-1] if errors else text.splitlines()[-1:]
                    return f"exited {proc.returncode}: {why}", None, None, None
                if time.monotonic() - started > timeout:
                    return f"not ready in {timeout:.0f} s", None, None, None
                time.sleep(0.02)
            took = time.monotonic() - started
            time.sleep(0.5)  # the ready line is written with the ready file
            return "ready", took, vm_rss_kib(proc.pid), ready_event(log_path)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def fill(etcd: EtcdServer, count: int) -> tuple[float, float]:
    """Write `count` bindings; returns (seconds, etcd db size in MiB)."""
    async with await EtcdClient.connect(etcd.client_config(request_timeout=60.0)) as client:
        took = await store_bindings(client, Keys(), SCOPE, POOL_FIRST, count, node=NODE)
        status = await client.status()
    return took, status.db_size / (1 << 20)


def measure(count: int, args: argparse.Namespace, base: Path) -> list[Start]:
    workdir = base / f"n{count}"
    (workdir / "etcd").mkdir(parents=True)
    etcd = EtcdServer(
        workdir=workdir / "etcd", extra_args=("--quota-backend-bytes", str(QUOTA)), timings=None
    )
    etcd.start()
    out = []
    try:
        progress(f"writing {count:,} bindings")
        write_s, db_mib = asyncio.run(fill(etcd, count))
        progress(
            f"written in {write_s:.1f} s ({count / max(write_s, 1e-9):,.0f}/s), db {db_mib:.0f} MiB"
        )
        config = spoke_config(etcd, workdir, args.session_ttl)
        for kind in ("first", "restart")[: 1 if args.no_restart else 2]:
            outcome, took, rss, line = run_spoke(workdir, config, args.timeout)
            lag = line.get("loop_lag_max_s") if line else None
            start = Start(
                count=count,
                kind=kind,
                write_s=round(write_s, 1) if kind == "first" else None,
                ready_s=None if took is None else round(took, 2),
                rss_mib=None if rss is None else round(rss / 1024, 1),
                bytes_per_binding=None,
                loop_lag_max_s=lag,
                db_mib=round(db_mib, 1),
                outcome=outcome,
            )
            progress(
                f"{count:,} {kind}: {outcome} {start.ready_s} s, {start.rss_mib} MiB, lag {lag}"
            )
            out.append(start)
    finally:
        etcd.close()
    return out


def table(starts: list[Start]) -> str:
    empty = {s.kind: s.rss_mib for s in starts if s.count == 0 and s.rss_mib is not None}
    for s in starts:
        base = empty.get(s.kind)
        if s.count and s.rss_mib is not None and base is not None:
            s.bytes_per_binding = round((s.rss_mib - base) * (1 << 20) / s.count)
    rows = [
        "| bindings | start | write s | ready s | RSS MiB | B/binding | loop lag max s"
        " | etcd db MiB | outcome |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in starts:
        cells = [f"{s.count:,}", s.kind, s.write_s, s.ready_s, s.rss_mib, s.bytes_per_binding,
                 s.loop_lag_max_s, s.db_mib, s.outcome]  # fmt: skip
        rows.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--counts", default="0,100000,1000000", help="comma-separated binding counts"
    )
    parser.add_argument("--session-ttl", type=int, default=3, help="the spoke's session TTL (s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for ready")
    parser.add_argument("--no-restart", action="store_true", help="one start per count only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    counts = [int(c.replace("_", "")) for c in args.counts.split(",") if c.strip()]
    if any(c > int(POOL_LAST) - int(POOL_FIRST) + 1 for c in counts):
        parser.error("a count larger than the pool (2^20)")
    base = Path(tempfile.mkdtemp(prefix="hubspoke-scale-"))
    starts: list[Start] = []
    try:
        for count in counts:
            for s in measure(count, args, base):
                print(json.dumps(asdict(s)), flush=True)
                starts.append(s)
    finally:
        if args.keep:
            progress(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(table(starts))
    return 0 if all(s.outcome == "ready" for s in starts) else 1


if __name__ == "__main__":
    sys.exit(main())
