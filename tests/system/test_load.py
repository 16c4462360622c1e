"""perfdhcp against the spoke: distinct addresses under load; kill -9 mid-load loses nothing.

perfdhcp (Kea's load generator) acts as a relay agent: it sets giaddr to its own address on
the lan, so the spoke selects the scope by giaddr and replies to perfdhcp's port 67. An
AF_PACKET capture beside it records every DHCPACK that reached the client side.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tests.lab.netlab import Host, Lab, Segment
from tests.lab.spokelab import SpokeLab

RESERVED_MAC = "02:aa:bb:cc:dd:01"
RESERVED_IP = "10.77.0.20"


def start_capture(host: Host, out: Path) -> subprocess.Popen[Any]:
    proc = host.popen([sys.executable, "-m", "tests.lab.ackcapture", "eth0", str(out)])
    deadline = time.monotonic() + 15
    while not (out.exists() and out.read_text().startswith("# ready")):
        assert proc.poll() is None, "ack capture exited"
        assert time.monotonic() < deadline, "ack capture did not start"
        time.sleep(0.05)
    return proc


def read_acks(path: Path) -> list[tuple[str, str]]:
    acks = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _, ip, mac, _ = line.split()
        acks.append((ip, mac))
    return acks


def perfdhcp(host: Host, *args: str) -> list[str]:
    return ["perfdhcp", "-4", "-l", "eth0", *args, "10.77.0.2"]


def test_200_clients_get_200_distinct_addresses(
    lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path
) -> None:
    spoke.scopes[0]["reservations"] = [{"hw_address": RESERVED_MAC, "ip": RESERVED_IP}]
    spoke.start_spoke()
    gen = lab.host("perf", lan, "10.77.0.10/24")
    acks_path = tmp_path / "acks.txt"
    cap = start_capture(gen, acks_path)
    # 200 clients (perfdhcp draws each exchange's client at random from 200 MACs); 3000
    # exchanges make it all but certain every one of the 200 shows up, each one repeatedly.
    done = gen.run(perfdhcp(gen, "-R", "200", "-r", "600", "-n", "3000"), timeout=120, check=False)
    gen.stop(cap)
    assert "drops" in done.stdout or "sent" in done.stdout, done.stdout + done.stderr
    acks = read_acks(acks_path)
    clients = {mac for _, mac in acks}
    assert len(clients) == 200, f"{len(clients)} distinct clients acked:\n{done.stdout}"
    # Every client got exactly one address, every address went to exactly one client.
    by_client: dict[str, set[str]] = {}
    by_ip: dict[str, set[str]] = {}
    for ip, mac in acks:
        by_client.setdefault(mac, set()).add(ip)
        by_ip.setdefault(ip, set()).add(mac)
    assert all(len(ips) == 1 for ips in by_client.values())
    assert all(len(macs) == 1 for macs in by_ip.values())
    assert len(by_ip) == 200
    assert RESERVED_IP not in by_ip
    for ip in by_ip:
        assert IPv4Address("10.77.0.30") <= IPv4Address(ip) <= IPv4Address("10.77.0.250")
    # etcd holds the same 200 bindings.
    bindings = spoke.bindings()
    assert set(bindings) == set(by_ip)
    for ip, macs in by_ip.items():
        assert bindings[ip]["hw"] == next(iter(macs))
        assert bindings[ip]["state"] == "bound"


def test_kill_9_mid_load_loses_no_acknowledged_binding(
    lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path
) -> None:
    spoke.scopes[0]["pools"] = ["10.77.0.30-10.77.3.250"]
    spoke.scopes[0]["subnet"] = "10.77.0.0/22"
    spoke.start_spoke()
    gen = lab.host("perf", lan, "10.77.0.10/24")
    acks_path = tmp_path / "acks.txt"
    cap = start_capture(gen, acks_path)
    load = gen.popen(
        perfdhcp(gen, "-R", "100000", "-r", "300", "-p", "8"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Let acknowledgements flow, then crash the spoke in the middle of the load.
    deadline = time.monotonic() + 20
    while len(read_acks(acks_path)) < 150:
        assert time.monotonic() < deadline, "no load reached the spoke"
        time.sleep(0.1)
    assert spoke.kill_spoke(signal.SIGKILL) == -signal.SIGKILL
    acked_before_kill = read_acks(acks_path)
    time.sleep(1.0)
    spoke.start_spoke()
    load.communicate(timeout=60)
    gen.stop(cap)
    acks = read_acks(acks_path)
    assert len(acks) >= len(acked_before_kill) > 0
    assert spoke.starts == 2
    bindings = spoke.bindings()
    missing = [(ip, mac) for ip, mac in acks if ip not in bindings]
    assert not missing, f"{len(missing)} acknowledged bindings missing from etcd: {missing[:5]}"
    wrong = [(ip, mac) for ip, mac in acks if bindings[ip]["hw"] != mac]
    # An address may legitimately move to another client only after its lease ends; these
    # leases are 120 s long, so none may have moved during this test.
    assert not wrong, f"addresses bound to another client than acknowledged: {wrong[:5]}"
    per_ip = Counter(ip for ip, _ in set(acks))
    assert max(per_ip.values()) == 1
