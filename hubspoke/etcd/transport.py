"""Owns the gRPC channels to etcd: endpoints, TLS, the auth token and error translation.

Every call to etcd starts here (the watch, keep-alive and election streams too). Unary calls
go to the current endpoint; an UNAVAILABLE answer moves to the next endpoint, and a read
(idempotent) is retried there.
Writes are never retried: their UNAVAILABLE or DEADLINE_EXCEEDED surfaces as `EtcdUncertain`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]

from hubspoke.api.etcd import rpc_pb2
from hubspoke.etcd.errors import (
    EtcdClosed,
    from_rpc_error,
    is_invalid_token,
    is_unavailable,
)


class _Message(Protocol):
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


ResponseT = TypeVar("ResponseT")
Parser = Callable[[bytes], ResponseT]


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """How to reach etcd. One per process, validated at start.

    `endpoints` are "host:port" strings. TLS is on when `ca_file` is set; `cert_file` and
    `key_file` add a client certificate. `user`/`password` turn on etcd authentication.
    """

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    request_timeout: float = 5.0
    reconnect_backoff_ms: int = 100
    max_reconnect_backoff_ms: int = 1000
    keepalive_time_ms: int = 10_000
    keepalive_timeout_ms: int = 5_000

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("at least one etcd endpoint is required")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("a client certificate needs ca_file (TLS)")
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.initial_reconnect_backoff_ms", self.reconnect_backoff_ms),
            ("grpc.min_reconnect_backoff_ms", self.reconnect_backoff_ms),
            ("grpc.max_reconnect_backoff_ms", self.max_reconnect_backoff_ms),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            # etcd refuses pings on a connection with no call open (GOAWAY too_many_pings);
            # our processes always hold a stream (watch, lease keep-alive) once running.
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]


class Transport:
    """Channels to every endpoint (created lazily), the current one, and the auth token."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._channels: dict[int, Any] = {}
        # (endpoint index, method path, parser) -> multicallable: built once, not per call
        self._unary: dict[tuple[int, str, Any], Any] = {}
        self._current = 0
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self._closed = False

    def _credentials(self) -> Any:
        cfg = self.config
        if cfg.ca_file is None:
            return None
        key = cfg.key_file.read_bytes() if cfg.key_file else None
        cert = cfg.cert_file.read_bytes() if cfg.cert_file else None
        return grpc.ssl_channel_credentials(cfg.ca_file.read_bytes(), key, cert)

    def channel(self) -> Any:
        """The `grpc.aio.Channel` to the current endpoint."""
        if self._closed:
            raise EtcdClosed("etcd client is closed")
        index = self._current
        chan = self._channels.get(index)
        if chan is None:
            target = self.config.endpoints[index]
            creds = self._credentials()
            options = self.config.channel_options()
            if creds is None:
                chan = grpc.aio.insecure_channel(target, options=options)
            else:
                chan = grpc.aio.secure_channel(target, creds, options=options)
            self._channels[index] = chan
        return chan

    def rotate(self) -> None:
        """Move to the next endpoint (after UNAVAILABLE)."""
        self._current = (self._current + 1) % len(self.config.endpoints)

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("token", self._token),) if self._token else None

    async def authenticate(self) -> None:
        """Fetch an auth token with user/password (no-op without credentials)."""
        cfg = self.config
        if cfg.user is None or cfg.password is None:
            return
        async with self._auth_lock:
            request = rpc_pb2.AuthenticateRequest(name=cfg.user, password=cfg.password)
            response = await self.unary(
                "/etcdserverpb.Auth/Authenticate",
                request,
                rpc_pb2.AuthenticateResponse.FromString,
                idempotent=True,
                authenticated=False,
            )
            self._token = response.token

    async def unary(
        self,
        path: str,
        request: _Message,
        parse: Parser[ResponseT],
        *,
        idempotent: bool,
        deadline: float | None = None,
        authenticated: bool = True,
    ) -> ResponseT:
        """One unary call with a gRPC deadline of `deadline` seconds (config default if None).

        Reads (`idempotent`) move through the endpoints on UNAVAILABLE; writes do not.
        """
        seconds = self.config.request_timeout if deadline is None else deadline
        attempts = len(self.config.endpoints) if idempotent else 1
        reauthenticated = False
        attempt = 0
        while True:
            chan = self.channel()
            ident = (self._current, path, parse)
            method = self._unary.get(ident)
            if method is None:
                method = self._unary[ident] = chan.unary_unary(
                    path, request_serializer=_serialize, response_deserializer=parse
                )
            metadata = self.metadata() if authenticated else None
            try:
                response: ResponseT = await method(request, timeout=seconds, metadata=metadata)
                return response
            except grpc.aio.AioRpcError as err:
                if authenticated and not reauthenticated and is_invalid_token(err):
                    reauthenticated = True
                    await self.authenticate()
                    continue
                if is_unavailable(err):
                    self.rotate()
                    attempt += 1
                    if attempt < attempts:
                        continue
                raise from_rpc_error(err) from err

    def stream_stream(self, path: str, parse: Parser[Any]) -> Any:
        """A new bidirectional stream call (`grpc.aio.StreamStreamCall`) on the current endpoint."""
        method = self.channel().stream_stream(
            path, request_serializer=_serialize, response_deserializer=parse
        )
        return method(metadata=self.metadata())

    def unary_stream(self, path: str, request: _Message, parse: Parser[Any]) -> Any:
        """A new server-streaming call (`grpc.aio.UnaryStreamCall`) on the current endpoint."""
        method = self.channel().unary_stream(
            path, request_serializer=_serialize, response_deserializer=parse
        )
        return method(request, metadata=self.metadata())

    async def close(self) -> None:
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        self._unary.clear()
        for chan in channels:
            await chan.close()


def _serialize(message: _Message) -> bytes:
    return message.SerializeToString()


def translate(err: BaseException) -> BaseException:
    """Map a gRPC error raised by a stream into our hierarchy; pass anything else through."""
    if isinstance(err, grpc.aio.AioRpcError):
        return from_rpc_error(err)
    return err


def is_rpc_error(err: BaseException) -> bool:
    return isinstance(err, grpc.aio.AioRpcError)


__all__ = ["EtcdConfig", "Transport", "is_rpc_error", "translate"]
