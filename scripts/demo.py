"""`make demo`: etcd and a spoke in a namespace, three real DHCP clients, bindings from etcd.

Everything runs inside namespaces this script creates (names unique to the run) and is torn
down before it exits, also on failure or Ctrl-C.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.support.netlab import Lab, check_environment
from tests.support.spokelab import ROOT, SpokeLab

SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "$ip|$router|$dns|$domain|$lease" > "{out}/$interface.$1"
exit 0
"""


def main() -> int:
    check_environment()
    work = Path(tempfile.mkdtemp(prefix="hubspoke-demo-"))
    script = work / "udhcpc.sh"
    script.write_text(SCRIPT.format(out=work))
    script.chmod(0o755)
    with Lab("hsdemo") as lab:
        lan = lab.segment("lan", subnet="10.77.0.0/24")
        spoke = SpokeLab.create(lab, lan, work)
        try:
            print(f"etcd {spoke.etcd.endpoint} and spoke-1 (10.77.0.2) in {spoke.server.netns}")
            spoke.start_spoke()
            print("spoke-1 is serving scope lan 10.77.0.0/24, pool 10.77.0.30-10.77.0.250\n")
            for n in (1, 2, 3):
                client = lab.host(f"client{n}", lan)
                t0 = time.monotonic()
                client.run(
                    ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1",
                     "-s", str(script), "-x", f"hostname:client{n}"],
                    timeout=30,
                )  # fmt: skip
                ip, router, dns, domain, lease = (
                    (work / "eth0.bound").read_text().strip().split("|")
                )
                print(
                    f"client{n} ({client.netns}): udhcpc got {ip} in "
                    f"{(time.monotonic() - t0) * 1000:.0f} ms; router {router}, "
                    f"dns {dns}, domain {domain}, lease {lease} s"
                )
            print(f"\nbindings read back from etcd ({ROOT}/leases/lan/):")
            print(
                f"{'address':<14} {'state':<8} {'hardware':<18} {'hostname':<9} {'expires in':>10}"
            )
            now = time.time()
            for ip, b in sorted(
                spoke.bindings().items(), key=lambda kv: tuple(map(int, kv[0].split(".")))
            ):
                hw = ":".join(b["hw"][i : i + 2] for i in range(0, len(b["hw"]), 2))
                print(
                    f"{ip:<14} {b['state']:<8} {hw:<18} {b.get('hostname') or '-':<9} "
                    f"{b['expires'] - now:>9.0f}s"
                )
            print("\nspoke metrics:")
            for line in spoke.metrics().splitlines():
                if line.startswith(("hubspoke_dhcp_packets_total", "hubspoke_bindings{")):
                    print("  " + line)
        finally:
            spoke.close()
    print("\nstopped: spoke, etcd and every namespace removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
