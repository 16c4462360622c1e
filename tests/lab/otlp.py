"""An in-test OTLP trace receiver: the OTLP `TraceService` on a threaded gRPC server.

    with OtlpReceiver() as receiver:          # listens on 127.0.0.1, a free port
        ... export to receiver.endpoint ...
        spans = receiver.wait_for(2, timeout=10)

Threaded on purpose: a synchronous flush from the event loop to a receiver served by the same
loop would time out. Spans are kept flattened: name, ids, parent id, attributes and the resource.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    name: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    kind: int
    attributes: dict[str, object]
    resource: dict[str, object]


def _value(v: AnyValue) -> object:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which is not None else None


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: OtlpReceiver) -> None:
        self._sink = sink

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        spans: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {a.key: _value(a.value) for a in s.attributes}
                    spans.append(
                        ReceivedSpan(
                            s.name, s.trace_id, s.span_id, s.parent_span_id, s.kind, attrs, resource
                        )
                    )
        self._sink._add(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """Collects every span exported to `endpoint` ("127.0.0.1:<port>")."""

    def __init__(self, listen: str = "127.0.0.1:0") -> None:
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Servicer(self), self._server
        )
        self.port = self._server.add_insecure_port(listen)
        self.endpoint = f"127.0.0.1:{self.port}"

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._cond:
            self._spans.extend(spans)
            self.requests += 1
            self._cond.notify_all()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._spans)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least `count` spans arrived; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._spans) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self._spans)} spans received, expected {count}")
                self._cond.wait(left)
            return list(self._spans)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.lab.otlp OUT`: receive spans, one JSON object per line in OUT.

    For processes in a lab namespace: run this in the same namespace; it writes
    `# listening <port>` first, then each span as it arrives, until SIGTERM.
    """
    import argparse
    import json
    import signal

    p = argparse.ArgumentParser()
    p.add_argument("out", help="file, or - for standard output")
    p.add_argument(
        "--listen", default="127.0.0.1:0", help="host:port (0.0.0.0:4317 in a container)"
    )
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    written = 0
    sink = sys.stdout if args.out == "-" else open(args.out, "w", buffering=1)  # noqa: SIM115
    with OtlpReceiver(args.listen) as receiver, sink as out:
        out.write(f"# listening {receiver.port}\n")
        while not stop.is_set():
            spans = receiver.spans
            for s in spans[written:]:
                record = {
                    "name": s.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "attributes": s.attributes,
                    "resource": s.resource,
                }
                out.write(json.dumps(record, default=str) + "\n")
            out.flush()
            written = len(spans)
            stop.wait(0.1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
