"""The asyncio audit of process logs (`tests.lab.asyncio_audit`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab import asyncio_audit
from tests.lab.asyncio_audit import asyncio_errors


def test_the_audit_finds_what_asyncio_prints() -> None:
    """The check itself, on lines as a spoke writes them (JSON records and raw stderr)."""
    lines = [
        '{"ts":1,"level":"info","logger":"hubspoke.reporter","event":"report.hub"}',
        '{"ts":1,"level":"error","logger":"asyncio","event":"Task was destroyed but it is '
        'pending!"}',
        '{"ts":1,"level":"error","logger":"asyncio","event":"Unclosed connection"}',
        '{"ts":1,"level":"warning","logger":"asyncio","event":"Executing took 0.2 seconds"}',
        "RuntimeError: aclose(): asynchronous generator is already running",
        "sys:1: RuntimeWarning: coroutine 'Reporter.run' was never awaited",
        "I1206 01:39:18.298302 chttp2_transport.cc:1403] Got goaway",
    ]
    assert asyncio_errors("\n".join(lines)) == [lines[1], lines[2], lines[4], lines[5]]


def test_watched_logs_are_checked_once_and_named(tmp_path: Path) -> None:
    clean, dirty = tmp_path / "hub.log", tmp_path / "s1.log"
    clean.write_text('{"level":"info","logger":"hubspoke.hub","event":"hub.elected"}\n')
    dirty.write_text("Task exception was never retrieved\n")
    asyncio_audit.forget()
    asyncio_audit.watch("hub-1", clean)
    asyncio_audit.watch("s1", dirty)
    asyncio_audit.watch("s2", tmp_path / "never-started.log")
    with pytest.raises(AssertionError, match=r"s1 .*1 line") as raised:
        asyncio_audit.check_watched()
    assert "hub-1" not in str(raised.value)
    asyncio_audit.check_watched()  # forgotten after the check
