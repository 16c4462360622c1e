"""Owns the check that a hubspoke process under test logged no asyncio error.

A hub or spoke process writes its stdout and stderr into one log (JSON lines, plus whatever the
interpreter prints itself). Error-level asyncio output there means a task, a callback or an
async generator was left in a state asyncio had to clean up: "Task was destroyed but it is
pending!", "Task exception was never retrieved", "aclose(): asynchronous generator is already
running", "Exception in callback ...", "coroutine ... was never awaited", or any record of the
`asyncio` logger at ERROR or above.

The labs that start processes (`ClusterLab`, `SpokeLab`) register each process's log here with
`watch` when they start it; the system tier calls `check_watched` at every test's teardown, once
the processes have stopped (`tests/system/conftest.py`), so every system and chaos test asserts
it. `asyncio_errors` is the check itself, for tests that read a log of their own.
"""

from __future__ import annotations

import json
from pathlib import Path

PATTERNS: tuple[str, ...] = (
    "Task was destroyed but it is pending",
    "Task exception was never retrieved",
    "aclose(): asynchronous generator is already running",
    "Exception in callback",
    "was never awaited",
)
_ERROR_LEVELS = frozenset({"error", "critical"})

_watched: dict[Path, str] = {}


def asyncio_errors(text: str) -> list[str]:
    """The lines of a process's output that are error-level asyncio output."""
    out = []
    for line in text.splitlines():
        if any(p in line for p in PATTERNS):
            out.append(line)
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(record, dict)
                and record.get("logger") == "asyncio"
                and str(record.get("level", "")).lower() in _ERROR_LEVELS
            ):
                out.append(line)
    return out


def log_errors(path: Path) -> list[str]:
    """`asyncio_errors` of the log at `path` (none if it does not exist)."""
    try:
        return asyncio_errors(path.read_text(errors="replace"))
    except FileNotFoundError:
        return []


def watch(name: str, log_path: Path) -> None:
    """Check `log_path` (process `name`'s output) at the next `check_watched`."""
    _watched[log_path] = name


def forget() -> None:
    """Forget every watched log without checking it."""
    _watched.clear()


def check_watched() -> None:
    """Raise AssertionError naming each watched log with asyncio errors (and the first lines);
    forget every watched log either way."""
    found = {}
    try:
        for path, name in _watched.items():
            errors = log_errors(path)
            if errors:
                found[f"{name} ({path})"] = errors
    finally:
        _watched.clear()
    if found:
        detail = "\n".join(
            f"{who}: {len(lines)} line(s)\n  " + "\n  ".join(line[:300] for line in lines[:5])
            for who, lines in found.items()
        )
        raise AssertionError(f"error-level asyncio output in process logs:\n{detail}")
