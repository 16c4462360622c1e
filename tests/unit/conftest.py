"""Unit tier: pure tests. Every test here fails if it opens a socket or starts a process
(`tests.lab.unitguard`); one that needs a real socket, server or process belongs to
tests/integration (real local servers) or tests/system (namespaces)."""

from __future__ import annotations

import pytest

from tests.lab.unitguard import refuse_io


@pytest.fixture(autouse=True)
def no_sockets_no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_io(monkeypatch)
