"""Operators' view of a real spoke: bad datagrams counted and survived, metrics, OTLP spans."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.lab.netlab import Host, Lab, Segment
from tests.lab.spokelab import SpokeLab

SEND_GARBAGE = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("0.0.0.0", 68))
header = bytes([1, 1, 6, 0]) + bytes(232)
cookie = b"\\x63\\x82\\x53\\x63"
bad = (b"x", b"\\x01" * 300, header + cookie + b"\\x35\\x09")
bad += (b"\\x09" + header[1:] + cookie + b"\\xff",)
for payload in bad:
    s.sendto(payload, ("255.255.255.255", 67))
"""


def udhcpc(host: Host, tmp: Path) -> str:
    script = tmp / "record.sh"
    script.write_text('#!/bin/sh\n[ "$1" = bound ] && echo "$ip" > "$(dirname "$0")/ip"\nexit 0\n')
    script.chmod(0o755)
    host.run(
        ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1",
         "-s", str(script)],
        timeout=30,
    )  # fmt: skip
    return (tmp / "ip").read_text().strip()


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no series {name}{{{want}}} in:\n{text}")


def test_malformed_datagrams_are_counted_and_never_stop_the_server(
    lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path
) -> None:
    spoke.start_spoke()
    client = lab.host("c1", lan)
    client.run([sys.executable, "-c", SEND_GARBAGE])
    ip = udhcpc(client, tmp_path)
    assert ip in spoke.bindings()
    text = spoke.metrics()
    assert metric(text, "hubspoke_dhcp_drops_total", reason="malformed-short") == 1
    assert metric(text, "hubspoke_dhcp_drops_total", reason="malformed-bad-cookie") == 1
    assert metric(text, "hubspoke_dhcp_drops_total", reason="malformed-option-overrun") == 1
    assert metric(text, "hubspoke_dhcp_drops_total", reason="malformed-bad-op") == 1
    logged = {e["reason"] for e in spoke.log_events() if e["event"] == "dhcp.malformed"}
    assert logged == {"short", "bad-cookie", "option-overrun", "bad-op"}
    assert metric(text, "hubspoke_dhcp_packets_total", direction="out", type="ACK") == 1
    assert metric(text, "hubspoke_bindings", scope="lan", state="bound") == 1
    assert metric(text, "hubspoke_etcd_commit_seconds_count") == 1
    assert spoke.proc is not None and spoke.proc.poll() is None


def test_each_transaction_is_a_span_with_an_etcd_commit_child(
    lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path
) -> None:
    spans_path = tmp_path / "spans.jsonl"
    receiver = spoke.server.popen(
        [sys.executable, "-m", "tests.lab.otlp", str(spans_path)],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not (spans_path.exists() and spans_path.read_text().startswith("# listening")):
        assert receiver.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    port = int(spans_path.read_text().splitlines()[0].split()[-1])
    spoke.otlp_endpoint = f"127.0.0.1:{port}"
    spoke.start_spoke()
    client = lab.host("c1", lan)
    ip = udhcpc(client, tmp_path)

    def spans() -> list[dict[str, Any]]:
        return [json.loads(x) for x in spans_path.read_text().splitlines() if x.startswith("{")]

    deadline = time.monotonic() + 30
    while not any(s["name"] == "etcd.commit" for s in spans()):
        assert time.monotonic() < deadline, f"spans so far: {spans()}"
        time.sleep(0.2)
    got = spans()
    discover = next(s for s in got if s["name"] == "dhcp.discover")
    request = next(s for s in got if s["name"] == "dhcp.request")
    commit = next(s for s in got if s["name"] == "etcd.commit")
    assert discover["attributes"]["dhcp.outcome"] == "offer"
    assert request["attributes"]["dhcp.outcome"] == "ack"
    assert request["attributes"]["dhcp.scope"] == "lan"
    assert request["attributes"]["dhcp.type"] == "REQUEST"
    assert request["attributes"]["dhcp.xid"].startswith("0x")
    assert commit["parent_span_id"] == request["span_id"]
    assert commit["trace_id"] == request["trace_id"]
    assert discover["resource"]["service.name"] == "hubspoke-spoke"
    assert ip in spoke.bindings()
