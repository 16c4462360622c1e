"""The unit tier's guard (tests/lab/unitguard.py, applied by tests/unit/conftest.py) refuses
sockets, processes and gRPC servers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from tests.lab.unitguard import NotInUnitTests

REFUSED: dict[str, Callable[[], Any]] = {
    "udp socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
    "tcp connection": lambda: socket.create_connection(("127.0.0.1", 9)),
    "subprocess.run": lambda: subprocess.run([sys.executable, "-c", "pass"], check=False),
    "os.fork": lambda: os.fork(),
    "os.kill": lambda: os.kill(os.getpid(), signal.SIGTERM),
    "grpc.aio.server": lambda: grpc.aio.server(),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_the_guard_refuses(what: str) -> None:
    with pytest.raises(NotInUnitTests):
        REFUSED[what]()


async def test_an_event_loop_and_its_self_pipe_still_work() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.send(b"x")
        assert b.recv(1) == b"x"
    await asyncio.sleep(0)
