"""`python -m bench.etcd_floor`: etcd's own commit latency, the floor under REQUEST->ACK.

Every DHCPACK waits for one etcd transaction (DESIGN.md, the commit rule), so no spoke can
answer a REQUEST faster than etcd commits. This measures that transaction alone, with no DHCP
and no event loop in the way: a one-member etcd (the tests' `EtcdServer`, a fresh data dir on
loopback) and gRPC's C-core client (`unary_unary(...).future()`) sending one
compare-and-put per binding at a fixed rate, as the spoke does at low load. Prints p50, p90,
p99 and p99.9 per round. Extra arguments go to etcd; the environment too (e.g. `GOGC=400`).

    python -m bench.etcd_floor                       # 2 rounds of 8,000 at 1,000/s
    python -m bench.etcd_floor --rate 1000 --count 8000 --rounds 2 -- --backend-batch-interval=1s
    GOGC=400 python -m bench.etcd_floor
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]

from bench.stats import percentile
from hubspoke.api.etcd import rpc_pb2
from tests.lab.etcd import EtcdServer


def txn(key: bytes) -> Any:
    return rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=key,
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=0,
            )
        ],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v" * 200))],
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.etcd_floor")
    p.add_argument("--rate", type=int, default=1000, help="transactions per second (1..5000)")
    p.add_argument("--count", type=int, default=8000, help="transactions per round (<= 50,000)")
    p.add_argument("--rounds", type=int, default=2, help="rounds (1..5)")
    p.add_argument("etcd_args", nargs="*", help="extra etcd flags (after --)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not (0 < args.rate <= 5000 and 0 < args.count <= 50_000 and 0 < args.rounds <= 5):
        p.error("--rate 1..5000, --count 1..50000, --rounds 1..5")
    extra = list(args.etcd_args)

    class Server(EtcdServer):
        def _command(self) -> list[str]:
            return super()._command() + extra

    with Server() as server:
        channel = grpc.insecure_channel(server.endpoint)
        call = channel.unary_unary(
            "/etcdserverpb.KV/Txn",
            request_serializer=rpc_pb2.TxnRequest.SerializeToString,
            response_deserializer=rpc_pb2.TxnResponse.FromString,
        )
        call(txn(b"/floor/warm-up"), timeout=10)
        for rnd in range(args.rounds):
            latencies: list[float] = []
            lock = threading.Lock()
            futures = []
            start = time.perf_counter()
            for i in range(args.count):
                delay = start + i / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent = time.perf_counter()
                future = call.future(txn(b"/floor/%d/%d" % (rnd, i)), timeout=10)

                def done(
                    f: Any, sent: float = sent, lock: Any = lock, out: list[float] = latencies
                ) -> None:
                    f.result()
                    with lock:
                        out.append((time.perf_counter() - sent) * 1000)

                future.add_done_callback(done)
                futures.append(future)
            for future in futures:
                future.result()
            time.sleep(0.1)  # the last callbacks
            ms = latencies
            print(
                f"round {rnd + 1}: {len(ms)} transactions at {args.rate}/s, etcd flags {extra}: "
                f"p50 {percentile(ms, 50):.2f} ms, p90 {percentile(ms, 90):.2f}, "
                f"p99 {percentile(ms, 99):.2f}, p99.9 {percentile(ms, 99.9):.2f}"
            )
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
