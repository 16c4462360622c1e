"""The spoke's binding journal survives kill -9 of its writer: every line reported fsync'd is
read back intact and in order (a real writer process)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from spoke.failover.journal import Journal
from tests.lab.bindingwrites import write

ROOT = Path(__file__).resolve().parents[2]


def test_fsynced_lines_survive_kill_9_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "s1.journal"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.lab.bindingwrites import write\n"
        "from spoke.failover.journal import Journal, encode_line\n"
        "j = Journal(Path(sys.argv[1]))\n"
        "for i in range(100000):\n"
        "    j.append([encode_line(write(i))])\n"
        "    print(i, flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    acked = -1
    deadline = time.monotonic() + 20
    while acked < 200 and time.monotonic() < deadline:
        acked = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    proc.stdout.close()
    read = Journal(path).read()
    assert acked >= 200
    # every line the writer reported as fsync'd is there, intact and in order
    assert len(read.entries) >= acked + 1
    assert [e.write for e in read.entries[: acked + 1]] == [write(i) for i in range(acked + 1)]
    assert read.bad_lines == ()
