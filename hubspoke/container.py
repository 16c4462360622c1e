"""The container image's entrypoint: `hubspoke-container COMMAND [ARGS...]`.

One image runs every process; the first word picks it:

- `hub ARGS`: the hub (`hubspoke-hub ARGS`).
- `spoke ARGS`: a spoke (`hubspoke-spoke ARGS`). The image runs as a non-root user, so the
  spoke's two privileges (binding port 67, raw frames for unicast replies) come from file
  capabilities on a dedicated copy of the interpreter (`SPOKE_PYTHON`), which the kernel grants
  only when the container was given NET_BIND_SERVICE and NET_RAW at run time. Without them the
  spoke is refused here with a message that says so, instead of a bare EPERM.
- `health [--target HOST:PORT] [--service NAME]`: one gRPC health check (grpc.health.v1),
  exit 0 when SERVING. For HEALTHCHECK and Kubernetes exec probes; the target defaults to
  `$HUBSPOKE_HEALTH_TARGET`, else the hub's default port on loopback.
- anything else: the operator CLI (`hubspoke status`, `leases`, `drain`, ...).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

SPOKE_PYTHON = Path(os.environ.get("HUBSPOKE_SPOKE_PYTHON", "/opt/hubspoke/bin/python-net"))
DEFAULT_HEALTH_TARGET = "127.0.0.1:7500"

CAP_NET_BIND_SERVICE = 10
CAP_NET_RAW = 13
SPOKE_CAPS = {"NET_BIND_SERVICE": CAP_NET_BIND_SERVICE, "NET_RAW": CAP_NET_RAW}

COMMANDS = ("hub", "spoke", "health")  # and every CLI verb (hub/cli/main.py)


def _capability_mask(field: str, status: str) -> int:
    """The capability set `field` (CapBnd, CapEff, ...) of a /proc/<pid>/status text."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.strip(), 16)
    raise ValueError(f"no {field} line")


def missing_spoke_caps(status: str) -> list[str]:
    """The spoke's capabilities absent from the bounding set described by `status`."""
    bounding = _capability_mask("CapBnd", status)
    return [name for name, bit in SPOKE_CAPS.items() if not bounding >> bit & 1]


def _exec_module(python: str, module: str, args: list[str]) -> int:
    """Replace this process with `python -m module args` (same PID: signals reach it).

    By module name, not by import: this package imports neither `hub` nor `spoke`."""
    os.execv(python, [python, "-m", module, *args])
    return 127  # not reached


def run_spoke(args: list[str]) -> int:
    if os.geteuid() == 0 or not SPOKE_PYTHON.exists():
        return _exec_module(sys.executable, "spoke.main", args)
    missing = missing_spoke_caps(Path("/proc/self/status").read_text())
    if missing:
        print(
            "hubspoke spoke: the container lacks capabilities "
            f"{', '.join(missing)}; a spoke binds UDP port 67 and sends raw frames: run it with "
            "cap_add: [NET_BIND_SERVICE, NET_RAW] (Docker) or "
            "securityContext.capabilities.add (Kubernetes)",
            file=sys.stderr,
        )
        return 2
    return _exec_module(str(SPOKE_PYTHON), "spoke.main", args)


def run_health(args: list[str]) -> int:
    import grpc  # type: ignore[import-untyped]
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    p = argparse.ArgumentParser(prog="hubspoke health", description="one gRPC health check")
    p.add_argument(
        "--target",
        default=os.environ.get("HUBSPOKE_HEALTH_TARGET", DEFAULT_HEALTH_TARGET),
        help="host:port (env HUBSPOKE_HEALTH_TARGET; default %(default)s)",
    )
    p.add_argument("--service", default="", help="service name; empty: the whole server")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds")
    ns = p.parse_args(args)
    with grpc.insecure_channel(ns.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=ns.service), timeout=ns.timeout
            )
        except grpc.RpcError as e:
            print(f"{ns.target}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{ns.target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def run_hub(args: list[str]) -> int:
    return _exec_module(sys.executable, "hub.main", args)


def run_cli(args: list[str]) -> int:
    return _exec_module(sys.executable, "hub.cli.main", args)


DISPATCH: dict[str, Callable[[list[str]], int]] = {
    "hub": run_hub,
    "spoke": run_spoke,
    "health": run_health,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0 if args else 2
    run = DISPATCH.get(args[0])
    if run is None:
        return run_cli(args)
    return run(args[1:])


if __name__ == "__main__":
    sys.exit(main())
