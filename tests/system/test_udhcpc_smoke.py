"""A first end-to-end check: udhcpc in a namespace gets a lease committed to etcd."""

from __future__ import annotations

from pathlib import Path

from tests.lab.netlab import Lab, Segment
from tests.lab.spokelab import DNS, DOMAIN, ROUTER, SpokeLab

SCRIPT = """#!/bin/sh
env | sort > "{out}/udhcpc-$1.env"
"""


def test_udhcpc_gets_a_committed_lease(
    lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path
) -> None:
    spoke.start_spoke()
    client = lab.host("c1", lan)
    script = tmp_path / "udhcpc.sh"
    script.write_text(SCRIPT.format(out=tmp_path))
    script.chmod(0o755)
    done = client.run(
        ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1",
         "-s", str(script)],
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    env = dict(
        line.split("=", 1) for line in (tmp_path / "udhcpc-bound.env").read_text().splitlines()
    )
    ip = env["ip"]
    assert env["router"] == ROUTER
    assert env["dns"].split() == DNS
    assert env["domain"] == DOMAIN
    binding = spoke.bindings()[ip]
    assert binding["state"] == "bound"
    assert binding["node"] == "spoke-1"
