"""The `hubspoke` command line: an operator's client of the hub's management gRPC API.

    hubspoke [--hub host:port[,host:port...]] [--token T] [--ca F [--cert F --key F]] [--json]
             status | spokes | scopes [show NAME | create FILE | update NAME FILE | delete NAME]
             | leases [--scope S] [--ip IP | --mac MAC | --client-id HEX] | drain NODE
             | undrain NODE

Several hub addresses are tried in order: an address that refuses the connection, answers
UNAVAILABLE (not the hub any more) or UNIMPLEMENTED (a standby holding the port with the health
service alone) passes the call to the next. Exit status: 0 success, 1 a
gRPC error (printed as `hubspoke: CODE: message`), 2 a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from hub.cli import render as fmt
from hubspoke.api.hubspoke.v1 import management_pb2 as mpb
from hubspoke.api.hubspoke.v1 import management_pb2_grpc as mgrpc
from hubspoke.rpc.client import ClientTls, open_channel

DEFAULT_HUB = "127.0.0.1:7500"  # the hub's default grpc.listen port (hub/config.py)
DEFAULT_TIMEOUT = 10.0
RESOLVE_TIMEOUT = 3.0  # seconds for one hub name to resolve before the next one is tried
MAX_LEASES = 100_000  # `leases` without a filter stops after this many rows
T = TypeVar("T")


class UsageError(Exception):
    """Bad arguments or an unreadable input file: exit status 2."""


class Unreachable(Exception):
    """No hub address could even be dialled (every name failed to resolve): exit status 1."""


@dataclass(frozen=True, slots=True)
class Target:
    hubs: tuple[str, ...]
    token: str | None
    tls: ClientTls | None
    timeout: float


class Stubs:
    def __init__(self, channel: Any) -> None:
        self.cluster = mgrpc.ClusterServiceStub(channel)
        self.scopes = mgrpc.ScopeServiceStub(channel)
        self.leases = mgrpc.LeaseServiceStub(channel)
        self.spokes = mgrpc.SpokeServiceStub(channel)


def _getaddrinfo(host: str, port: int) -> asyncio.Future[list[Any]]:
    """`socket.getaddrinfo` in a daemon thread of its own: a resolver that hangs (a stopped
    container's name in Docker's DNS with no route out takes 20 s) is abandoned on time-out and
    does not hold the CLI's exit, as a thread of the default executor would."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[list[Any]] = loop.create_future()

    def settle(result: list[Any] | None, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result or [])

    def work() -> None:
        try:
            result: list[Any] | None = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            error: BaseException | None = None
        except (OSError, UnicodeError) as e:
            result, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"resolve {host}", daemon=True).start()
    return fut


async def resolve_each(
    hub: str, within: float = RESOLVE_TIMEOUT
) -> list[tuple[str, str | None]] | None:
    """(dial address, TLS server name) for every address `hub` ("host:port") resolves to: a name
    may stand for several hub processes (a Kubernetes headless Service), of which only the
    elected one serves the API. A literal address, a name with one address or a name that does
    not resolve (gRPC then reports it) is dialled as given; None when the resolver gave no
    answer `within` seconds (the caller moves on to the next hub)."""
    host, _, port = hub.rpartition(":")
    if not host or host.startswith("["):
        return [(hub, None)]
    try:
        ipaddress.ip_address(host)
        return [(hub, None)]
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(_getaddrinfo(host, int(port)), within)
    except TimeoutError:
        return None
    except (OSError, UnicodeError, ValueError):
        return [(hub, None)]
    ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if len(ips) <= 1:
        return [(hub, None)]
    return [(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", host) for ip in ips]


async def call_any(target: Target, work: Callable[[Stubs], Awaitable[T]]) -> T:
    """Run `work` against the first hub that answers, trying each address of each name in turn.
    UNAVAILABLE (nothing listens) and UNIMPLEMENTED (a standby holding the port with the health
    service alone) move on to the next address."""
    last: grpc.aio.AioRpcError | None = None
    unresolved: list[str] = []
    for hub in target.hubs:
        addresses = await resolve_each(hub, min(target.timeout, RESOLVE_TIMEOUT))
        if addresses is None:
            unresolved.append(hub)
            continue
        for address, server_name in addresses:
            channel = open_channel(
                address, token=target.token, tls=target.tls, server_name=server_name
            )
            try:
                return await work(Stubs(channel))
            except grpc.aio.AioRpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                    raise
                last = e
            finally:
                await channel.close()
    if last is None:
        raise Unreachable(
            f"no hub could be dialled: {', '.join(unresolved)}: the name did not resolve "
            f"within {min(target.timeout, RESOLVE_TIMEOUT):g} s"
        )
    raise last


def to_dict(message: Message) -> dict[str, Any]:
    d = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    if "epoch" in d:
        d["epoch"] = int(d["epoch"])  # uint64: JSON mapping gives a string
    return d


def read_scope_file(path: str) -> str:
    """A scope document from a YAML or JSON file ("-": stdin), as JSON text."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        doc = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: {e}") from e
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: a scope is a mapping (name, subnet, pools, ...)")
    return json.dumps(doc, default=str)


async def run(opts: argparse.Namespace, target: Target) -> tuple[Any, str]:
    """Perform the command; return (its JSON-ready answer, its text rendering)."""
    timeout = target.timeout
    cmd = opts.command
    if cmd in ("status", "spokes"):
        state = to_dict(
            await call_any(
                target,
                lambda s: s.cluster.GetClusterState(mpb.GetClusterStateRequest(), timeout=timeout),
            )
        )
        if cmd == "spokes":
            return state.get("spokes", []), fmt.spokes_text(state)
        return state, fmt.status_text(state)
    if cmd == "scopes":
        return await _scopes(opts, target)
    if cmd == "leases":
        return await _leases(opts, target)
    if cmd in ("drain", "undrain"):
        if cmd == "drain":
            await call_any(
                target, lambda s: s.spokes.Drain(mpb.DrainRequest(node=opts.node), timeout=timeout)
            )
        else:
            await call_any(
                target,
                lambda s: s.spokes.Undrain(mpb.UndrainRequest(node=opts.node), timeout=timeout),
            )
        draining = cmd == "drain"
        verb = "draining" if draining else "no longer draining"
        return {"node": opts.node, "draining": draining}, f"{opts.node}: {verb}"
    raise UsageError(f"unknown command {cmd!r}")


async def _scopes(opts: argparse.Namespace, target: Target) -> tuple[Any, str]:
    timeout = target.timeout
    action = opts.scopes_action or "list"
    if action == "list":
        listed = await call_any(
            target, lambda s: s.scopes.ListScopes(mpb.ListScopesRequest(), timeout=timeout)
        )
        docs = [json.loads(x.scope_json) for x in listed.scopes]
        return docs, fmt.scopes_text(docs)
    if action == "delete":
        await call_any(
            target,
            lambda s: s.scopes.DeleteScope(mpb.DeleteScopeRequest(name=opts.name), timeout=timeout),
        )
        return {"deleted": opts.name}, f"scope {opts.name} deleted"
    if action == "show":
        scope = await call_any(
            target,
            lambda s: s.scopes.GetScope(mpb.GetScopeRequest(name=opts.name), timeout=timeout),
        )
    elif action == "create":
        text = read_scope_file(opts.file)
        scope = await call_any(
            target,
            lambda s: s.scopes.CreateScope(
                mpb.CreateScopeRequest(scope_json=text), timeout=timeout
            ),
        )
    else:
        text = read_scope_file(opts.file)
        request = mpb.UpdateScopeRequest(name=opts.name, scope_json=text)
        scope = await call_any(target, lambda s: s.scopes.UpdateScope(request, timeout=timeout))
    doc = json.loads(scope.scope_json)
    return doc, fmt.scope_text(doc)


async def _leases(opts: argparse.Namespace, target: Target) -> tuple[Any, str]:
    timeout = target.timeout
    rows: list[dict[str, Any]] = []
    if opts.ip or opts.mac or opts.client_id:
        if opts.ip:
            request = mpb.GetLeaseRequest(ip=opts.ip)
        elif opts.mac:
            request = mpb.GetLeaseRequest(mac=opts.mac)
        else:
            request = mpb.GetLeaseRequest(client_id=opts.client_id)
        found = await call_any(target, lambda s: s.leases.GetLease(request, timeout=timeout))
        rows = [to_dict(x) for x in found.leases]
    else:
        token = ""
        while len(rows) < MAX_LEASES:
            page_request = mpb.ListLeasesRequest(
                scope=opts.scope or "", page_size=opts.page_size, page_token=token
            )
            page = await call_any(target, _list_page(page_request, timeout))
            rows += [to_dict(x) for x in page.leases]
            token = page.next_page_token
            if not token:
                break
    return rows, fmt.leases_text(rows)


def _list_page(request: mpb.ListLeasesRequest, timeout: float) -> Callable[[Stubs], Any]:
    return lambda s: s.leases.ListLeases(request, timeout=timeout)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hubspoke", description="Operate a hubspoke DHCP cluster through its hub."
    )
    p.add_argument(
        "--hub",
        default=os.environ.get("HUBSPOKE_HUB", DEFAULT_HUB),
        help="host:port of the hub, or several separated by commas, tried in order "
        f"(env HUBSPOKE_HUB; default {DEFAULT_HUB})",
    )
    p.add_argument("--token", default=None, help="bearer token (env HUBSPOKE_TOKEN)")
    p.add_argument("--ca", type=Path, help="CA file to verify the hub (turns TLS on)")
    p.add_argument("--cert", type=Path, help="client certificate for mTLS (with --key)")
    p.add_argument("--key", type=Path, help="client key for mTLS")
    p.add_argument("--tls", action="store_true", help="TLS with the system's CA roots")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per call")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="the hub, its epoch and every spoke")
    sub.add_parser("spokes", help="spokes in detail")
    scopes = sub.add_parser("scopes", help="list, show, create, update or delete scopes")
    actions = scopes.add_subparsers(dest="scopes_action", metavar="ACTION")
    actions.add_parser("list", help="every scope (the default)")
    actions.add_parser("show", help="one scope's document").add_argument("name")
    actions.add_parser("create", help="a new scope from a YAML/JSON file").add_argument("file")
    update = actions.add_parser("update", help="replace a scope from a YAML/JSON file")
    update.add_argument("name")
    update.add_argument("file")
    actions.add_parser("delete", help="remove a scope").add_argument("name")
    leases = sub.add_parser("leases", help="list leases, or find them by ip, mac or client-id")
    leases.add_argument("--scope", help="only this scope")
    leases.add_argument("--page-size", type=int, default=500, help=argparse.SUPPRESS)
    by = leases.add_mutually_exclusive_group()
    by.add_argument("--ip")
    by.add_argument("--mac")
    by.add_argument("--client-id")
    sub.add_parser("drain", help="hand a spoke's buckets and blocks over").add_argument("node")
    sub.add_parser("undrain", help="let a drained spoke serve again").add_argument("node")
    return p


def target_of(opts: argparse.Namespace) -> Target:
    hubs = tuple(h.strip() for h in opts.hub.split(",") if h.strip())
    if not hubs:
        raise UsageError("--hub: at least one host:port")
    if (opts.cert is None) != (opts.key is None):
        raise UsageError("--cert and --key go together")
    if opts.timeout <= 0:
        raise UsageError("--timeout: must be positive")
    tls = None
    if opts.ca or opts.cert or opts.tls:
        for f in (opts.ca, opts.cert, opts.key):
            if f is not None and not f.is_file():
                raise UsageError(f"{f}: no such file")
        tls = ClientTls(ca_file=opts.ca, cert_file=opts.cert, key_file=opts.key)
    token = opts.token or os.environ.get("HUBSPOKE_TOKEN") or None
    return Target(hubs=hubs, token=token, tls=tls, timeout=opts.timeout)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parser().parse_args(argv)  # exits 2 on a usage error
    try:
        target = target_of(opts)
        answer, text = asyncio.run(run(opts, target))
    except UsageError as e:
        print(f"hubspoke: {e}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as e:
        print(f"hubspoke: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except Unreachable as e:
        print(f"hubspoke: UNAVAILABLE: {e}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(answer, indent=2, sort_keys=True) if opts.json else text)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
