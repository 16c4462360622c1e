"""What keeps the unit tier pure: `refuse_io` makes a new socket, bind or connect, a gRPC server
or channel, and starting or signalling a process raise `NotInUnitTests` (tests/unit/conftest.py
applies it to every unit test). A socket built around an existing descriptor stays allowed: an
`asyncio` loop's self-pipe is a socket pair."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

PROCESS_CALLS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "kill", "killpg")
SOCKET_METHODS = ("bind", "connect", "connect_ex", "listen")
GRPC_CALLS = ("server", "insecure_channel", "secure_channel")
_socket_init = socket.socket.__init__


class NotInUnitTests(AssertionError):
    """A unit test opened a socket or started a process."""


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise NotInUnitTests(f"{what} in a unit test: move the test to tests/integration")

    return refused


def _socket_init_on_descriptors_only(self: socket.socket, *args: Any, **kwargs: Any) -> None:
    fileno = kwargs.get("fileno", args[3] if len(args) > 3 else None)
    if fileno is None:
        raise NotInUnitTests("a new socket in a unit test: move the test to tests/integration")
    _socket_init(self, *args, **kwargs)


def refuse_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until `monkeypatch` undoes it: no new socket, no network call, no process."""
    monkeypatch.setattr(socket.socket, "__init__", _socket_init_on_descriptors_only)
    for method in SOCKET_METHODS:
        monkeypatch.setattr(socket.socket, method, _refuse(f"socket.{method}"))
    monkeypatch.setattr(socket, "create_connection", _refuse("socket.create_connection"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("a subprocess"))
    for name in PROCESS_CALLS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse(f"os.{name}"))
    for name in GRPC_CALLS:
        monkeypatch.setattr(grpc, name, _refuse(f"grpc.{name}"))
        monkeypatch.setattr(grpc.aio, name, _refuse(f"grpc.aio.{name}"))
