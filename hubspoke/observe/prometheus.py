"""The asyncio HTTP server that exposes a process's Prometheus metrics at /metrics.

Shared by the hub (`hub.metrics`) and the spoke (`spoke.metrics`): each owns its metric names
and its own `CollectorRegistry`; this module only answers scrapes. The server runs on the
event loop, so collectors that compute values at scrape time run on the loop thread, never
beside the code that mutates what they read.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Protocol, Self

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)


class Exposable(Protocol):
    """What the server scrapes: a body and its content type for the scraper's Accept header."""

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]: ...


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """`registry`'s scrape body and content type (OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class MetricsServer:
    """A small HTTP/1.1 server on the event loop: `GET /metrics`, one request per connection."""

    READ_TIMEOUT = 5.0
    MAX_HEADER = 16384

    def __init__(self, metrics: Exposable, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("metrics server is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=self.MAX_HEADER
        )
        log.info("metrics.listening", extra={"host": self._host, "port": self.port})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, ctype = self._answer(head)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # the scraper's fault or gone: nothing to answer
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[str, bytes, str]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target, _ = parts
        if target.split("?", 1)[0] != "/metrics":
            return "404 Not Found", b"not found; try /metrics\n", "text/plain"
        if method != "GET":
            return "405 Method Not Allowed", b"GET only\n", "text/plain"
        accept = next(
            (
                v.strip()
                for k, _, v in (h.partition(":") for h in lines[1:])
                if k.lower() == "accept"
            ),
            None,
        )
        body, ctype = self._metrics.exposition(accept)
        return "200 OK", body, ctype
