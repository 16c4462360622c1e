"""kill -9 of the spoke, then a restart: a client renewing afterwards keeps its address."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.lab.netlab import Lab, Segment
from tests.lab.spokelab import SpokeLab

# The client configures its address inside its own namespace, as a real host would: the
# spoke answers a RENEWING request by unicast to ciaddr (RFC 2131 4.1).
SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" ;;
  bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;;
esac
echo "$1 $ip" >> "{out}"
exit 0
"""


def events(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [
        (parts[0], parts[1] if len(parts) > 1 else "")
        for parts in (line.split() for line in path.read_text().splitlines())
        if parts
    ]


def wait_event(path: Path, kind: str, count: int, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while True:
        found = [ip for k, ip in events(path) if k == kind]
        if len(found) >= count:
            return found[count - 1]
        assert time.monotonic() < deadline, f"no {kind} #{count}: {events(path)}"
        time.sleep(0.1)


def test_renewal_after_kill_9_and_restart_keeps_the_address(
    lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path
) -> None:
    spoke.start_spoke()
    client = lab.host("c1", lan)
    log = tmp_path / "events"
    script = tmp_path / "udhcpc.sh"
    script.write_text(SCRIPT.format(out=log))
    script.chmod(0o755)
    udhcpc = client.popen(
        ["busybox", "udhcpc", "-i", "eth0", "-f", "-t", "5", "-T", "1", "-s", str(script)]
    )
    ip = wait_event(log, "bound", 1)
    before = spoke.bindings()[ip]
    revision_before = before["_mod_revision"]

    assert spoke.kill_spoke(signal.SIGKILL) == -signal.SIGKILL
    spoke.start_spoke()
    assert spoke.bindings()[ip]["state"] == "bound"
    assert spoke.bindings()[ip]["_mod_revision"] == revision_before

    udhcpc.send_signal(signal.SIGUSR1)  # udhcpc: renew now (a unicast RENEWING request)
    assert wait_event(log, "renew", 1) == ip
    after = [e for e in spoke.log_events() if e.get("event") == "spoke.ready"]
    assert len(after) == 2  # one line per start, both in the same log
    binding = spoke.bindings()[ip]
    assert binding["state"] == "bound"
    assert binding["hw"] == before["hw"]
    assert binding["client"] == before["client"]
    client.stop(udhcpc)
