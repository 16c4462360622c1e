"""The spoke's binding journal: format round trip, torn tails (kill -9 of the writer:
tests/integration/test_journal_kill.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from spoke.failover.journal import Journal, JournalWriter, decode_line, encode_line
from tests.lab.bindingwrites import write


@pytest.mark.parametrize("new", [True, False])
def test_a_line_round_trips(new: bool) -> None:
    w = write(3, new=new)
    line = encode_line(w, "decline")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    entry = decode_line(line[:-1], 5)
    assert entry.seq == 5 and entry.kind == "decline"
    assert entry.write == w


def test_a_torn_last_line_is_ignored_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = Journal(path)
    j.append([encode_line(write(0)), encode_line(write(1))])
    full = encode_line(write(2))
    with path.open("ab") as f:
        f.write(full[: len(full) // 2])
    read = Journal(path).read()
    assert [e.write for e in read.entries] == [write(0), write(1)]
    assert read.torn_tail and read.bad_lines == ()


def test_a_garbage_line_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(encode_line(write(0)) + b'{"v":1,"scope":\n' + encode_line(write(1)))
    read = Journal(path).read()
    assert [e.seq for e in read.entries] == [0, 2]
    assert read.bad_lines == (1,) and not read.torn_tail


def test_truncate_empties_and_appends_continue(tmp_path: Path) -> None:
    j = Journal(tmp_path / "sub" / "j")
    assert j.is_empty() and j.read().entries == ()
    j.append([encode_line(write(0))])
    assert not j.is_empty()
    j.truncate()
    assert j.is_empty()
    j.append([encode_line(write(1))])
    assert [e.write for e in j.read().entries] == [write(1)]
    j.close()


async def test_concurrent_appends_are_group_committed(tmp_path: Path) -> None:
    class CountingJournal(Journal):
        calls = 0

        def append(self, lines: list[bytes]) -> None:  # type: ignore[override]
            CountingJournal.calls += 1
            super().append(lines)

    journal = CountingJournal(tmp_path / "j")
    writer = JournalWriter(journal)
    await asyncio.gather(*(writer.append(write(i)) for i in range(50)))
    assert writer.written == 50
    assert CountingJournal.calls < 50
    assert sorted(int(e.write.ip) for e in journal.read().entries) == [
        int(write(i).ip) for i in range(50)
    ]


def test_reads_from_where_the_last_one_ended(tmp_path: Path) -> None:
    """RECOVER reads only what was journaled since its last round: same entries, same line
    numbers as a whole read, and a line still being written is left for the next read."""
    path = tmp_path / "j"
    j = Journal(path)
    j.append([encode_line(write(0)), encode_line(write(1))])
    first = j.read()
    assert [e.seq for e in first.entries] == [0, 1] and first.next_seq == 2
    assert first.end == path.stat().st_size
    assert j.read(first.end, first.next_seq).entries == ()
    half = encode_line(write(2))
    with path.open("ab") as f:
        f.write(half[:10])
    partial = j.read(first.end, first.next_seq)
    assert partial.entries == () and partial.torn_tail
    assert (partial.end, partial.next_seq) == (first.end, first.next_seq)
    with path.open("ab") as f:
        f.write(half[10:] + b'{"v":1,"scope":\n')
    j.append([encode_line(write(3))])
    rest = j.read(partial.end, partial.next_seq)
    assert [(e.seq, e.write) for e in rest.entries] == [(2, write(2)), (4, write(3))]
    assert rest.bad_lines == (3,) and not rest.torn_tail
    assert [e.seq for e in j.read().entries] == [0, 1, 2, 4]
    assert rest.end == path.stat().st_size and rest.next_seq == 5


async def test_a_submitted_line_is_pending_before_the_writer_runs(tmp_path: Path) -> None:
    """The RECOVER race: a journal write decided in one loop turn must count as pending in that
    same turn, or RECOVER could truncate the journal and go NORMAL before the line exists."""
    journal = Journal(tmp_path / "j")
    writer = JournalWriter(journal)
    done = writer.submit(write(1))
    assert writer.has_pending  # no await between the decision and this check
    async with writer.lock:  # the recoverer's check-and-truncate excludes the write
        assert writer.has_pending
    await done
    assert not writer.has_pending
    assert [e.write for e in journal.read().entries] == [write(1)]
    await writer.close()
    journal.close()
