"""The spoke's local binding journal: the commit of COMMUNICATION-INTERRUPTED (DESIGN.md).

Owns the journal file and its format: append-only, one JSON line per binding write (the
`BindingWrite` data: scope, address, binding, the revision it compared against, the block
fence), written and `os.fsync`'d before the reply that depends on it is sent. A line is at most
`MAX_LINE` bytes (a binding is capped by `hubspoke.values.MAX_BINDING_VALUE`): a longer one is
refused when written (`ValueTooLarge`, the commit fails) and skipped as bad when read. Reading
tolerates a torn last line (a crash mid-write): it is ignored and reported, as is any line
that does not parse. `truncate` empties the file once RECOVER has replayed it into etcd.

`Journal` does blocking file I/O; `JournalWriter` is its asyncio face: appends made while a
write is in progress are written and fsync'd together (group commit), in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hubspoke.model import Block, Versioned
from hubspoke.values import (
    MAX_BINDING_VALUE,
    ValueFormatError,
    ValueTooLarge,
    decode_binding,
    encode_binding,
)
from spoke.dhcp.decisions import BindingWrite, CommitKind
from spoke.leases.commit import Done, Durable, Failed

__all__ = [
    "LOCAL_VERSION",
    "Journal",
    "JournalEntry",
    "JournalPath",
    "JournalRead",
    "JournalWriter",
    "Offload",
    "decode_line",
    "encode_line",
    "in_thread",
]

VERSION = 1
MAX_LINE = MAX_BINDING_VALUE + 512
"""Bytes of one journal line with its newline: a binding and its write's bounded fields."""

LOCAL_VERSION = Versioned(0, 0)
"""The version the table holds a journaled new binding under until RECOVER replays it."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled write; `seq` is its line number in the file (from 0)."""

    seq: int
    write: BindingWrite
    kind: str


@dataclass(frozen=True, slots=True)
class JournalRead:
    """What a read found: the entries, and lines skipped (a torn tail or garbage).

    `end` is the byte offset just after the last whole line read and `next_seq` the sequence
    number of the line there: pass both to the next `read` to get only what was added since.
    """

    entries: tuple[JournalEntry, ...]
    torn_tail: bool
    bad_lines: tuple[int, ...]
    end: int = 0
    next_seq: int = 0


def encode_line(write: BindingWrite, kind: str = "ack") -> bytes:
    d: dict[str, Any] = {
        "v": VERSION,
        "kind": kind,
        "scope": write.scope,
        "ip": str(write.ip),
        "binding": json.loads(encode_binding(write.binding)),
        "expected": (
            None
            if write.expected is None
            else [write.expected.create_revision, write.expected.mod_revision]
        ),
        "fence": (
            None
            if write.fence is None
            else {"first": str(write.fence[0].first), "last": str(write.fence[0].last),
                  "revision": write.fence[1]}
        ),
    }  # fmt: skip
    line = json.dumps(d, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise ValueTooLarge(f"journal line of {len(line)} bytes (at most {MAX_LINE})")
    return line


def decode_line(line: bytes, seq: int) -> JournalEntry:
    """Parse one line (without its newline); `ValueFormatError` if it is not a journal line."""
    if len(line) >= MAX_LINE:
        raise ValueFormatError(f"journal line {seq} is {len(line)} bytes (at most {MAX_LINE})")
    try:
        d = json.loads(line)
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise ValueFormatError("unsupported journal line")
        scope = str(d["scope"])
        binding = decode_binding(json.dumps(d["binding"]).encode())
        expected = d["expected"]
        fence = d["fence"]
        write = BindingWrite(
            scope=scope,
            ip=IPv4Address(d["ip"]),
            binding=binding,
            expected=None if expected is None else Versioned(int(expected[0]), int(expected[1])),
            fence=(
                None
                if fence is None
                else (
                    Block(scope, IPv4Address(fence["first"]), IPv4Address(fence["last"])),
                    int(fence["revision"]),
                )
            ),
        )
        return JournalEntry(seq, write, str(d.get("kind", "ack")))
    except ValueFormatError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueFormatError(f"bad journal line {seq}: {e}") from e


class Journal:
    """The journal file at `path` (blocking I/O; see `JournalWriter` for the event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if created:  # the new file's directory entry must survive a crash too
                dirfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dirfd)
                finally:
                    os.close(dirfd)
        return self._fd

    def append(self, lines: Sequence[bytes]) -> None:
        """Write `lines` (each ending in a newline) and fsync: durable when this returns."""
        fd = self._open()
        data = b"".join(lines)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)

    def read(self, start: int = 0, first_seq: int = 0) -> JournalRead:
        """The lines from byte offset `start` on (line `first_seq` is there): only the lines
        added since an earlier read, when given that read's `end` and `next_seq`."""
        try:
            with self.path.open("rb") as f:
                f.seek(start)
                raw = f.read()
        except FileNotFoundError:
            return JournalRead((), False, (), start, first_seq)
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline; else a torn line
        entries: list[JournalEntry] = []
        bad: list[int] = []
        for seq, line in enumerate(lines, first_seq):
            try:
                entries.append(decode_line(line, seq))
            except ValueFormatError:
                bad.append(seq)
        end = start + len(raw) - len(tail)
        return JournalRead(tuple(entries), bool(tail), tuple(bad), end, first_seq + len(lines))

    def is_empty(self) -> bool:
        try:
            return self.path.stat().st_size == 0
        except FileNotFoundError:
            return True

    def truncate(self) -> None:
        """Empty the journal (durably): everything in it is in etcd."""
        fd = self._open()
        os.ftruncate(fd, 0)
        os.fsync(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


T = TypeVar("T")


class Offload(Protocol):
    """Runs blocking file work off the event loop: a worker thread in the spoke, inline (and
    deterministic) in the simulation."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


async def in_thread(fn: Callable[[], T], /) -> T:
    return await asyncio.to_thread(fn)


class JournalWriter:
    """Group-committing appends to a `Journal` from the event loop.

    `submit(write)` queues the line at once (synchronously: from that moment `has_pending` is
    true, so RECOVER cannot truncate the journal and return to NORMAL between the decision to
    journal and the write) and returns a future done once the line is fsync'd. Lines submitted
    while a write is in progress go out together in the next one. `lock` serialises writes with
    the recoverer's check-and-truncate. `offload` runs the blocking append (a worker thread;
    the simulation runs it inline).
    """

    def __init__(self, journal: Journal, *, offload: Offload = in_thread) -> None:
        self.journal = journal
        self.lock = asyncio.Lock()
        self.written = 0
        self._offload = offload
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def has_pending(self) -> bool:
        """Lines submitted and not yet written."""
        return bool(self._pending)

    def submit(self, write: BindingWrite, kind: str = "ack") -> asyncio.Future[None]:
        """Queue `write`; the future completes once it is durable (or fails with the OSError)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        try:
            line = encode_line(write, kind)
        except ValueTooLarge as e:
            done.set_exception(e)  # this write fails; the journal is untouched
            return done
        self._pending.append((line, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="journal-writer")
        return done

    async def append(self, write: BindingWrite, kind: str = "ack") -> None:
        await self.submit(write, kind)

    async def _flush(self) -> None:
        while self._pending:
            async with self.lock:
                batch, self._pending = self._pending, []
                if not batch:
                    continue
                try:
                    await self._offload(partial(self.journal.append, [line for line, _ in batch]))
                except Exception as e:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(e)
                    continue
                self.written += len(batch)
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def close(self) -> None:
        """Let the lines already submitted reach the file."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.shield(flusher)


def journaled_version(write: BindingWrite) -> Versioned:
    """The version the table holds a journaled write under until it is replayed."""
    return write.expected if write.expected is not None else LOCAL_VERSION


class JournalPath:
    """The journal as a `spoke.leases.commit.Committer`: a write is durable once its line is
    fsync'd (queued synchronously by `submit`, see `JournalWriter`)."""

    path = "journal"

    def __init__(self, writer: JournalWriter) -> None:
        self.writer = writer

    def submit(self, write: BindingWrite, kind: CommitKind, done: Done) -> None:
        durable = self.writer.submit(write, kind.value)
        durable.add_done_callback(partial(_journaled, write, done))


def _journaled(write: BindingWrite, done: Done, durable: asyncio.Future[None]) -> None:
    if durable.cancelled():
        done(Failed("stopping"))
    elif (error := durable.exception()) is not None:
        done(Failed("journal-error", error))
    else:
        done(Durable(journaled_version(write), journaled=True))
