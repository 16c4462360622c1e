"""`make demo`: etcd, a hub and two spokes in namespaces; three real clients; the cluster state.

Everything runs inside network namespaces this script creates (names unique to the run) and is
torn down before it exits, also on failure or Ctrl-C: nothing is left running.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.clients import BOUND_REASONS, Dhclient, Dhcpcd, DhcpClient, Udhcpc
from tests.lab.clusterlab import DB_IP, HUB_PORT, ROOT, TOKEN, ClusterLab
from tests.lab.netlab import Lab, check_environment

SPOKES = {"spoke-1": "10.77.0.11", "spoke-2": "10.77.0.12"}


def say(text: str = "") -> None:
    print(text, flush=True)


def cli(cl: ClusterLab, *args: str) -> str:
    done = cl.db.run(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "--hub",
            f"{DB_IP}:{HUB_PORT}",
            "--token",
            TOKEN,
            *args,
        ],
        check=False,
        timeout=30,
    )
    return str(done.stdout if done.returncode == 0 else done.stderr)


def wait_ready(cl: ClusterLab, within: float = 30.0) -> None:
    def ready() -> bool:
        state = cl.cli("status")
        live = [s for s in state.get("spokes", []) if s["live"]]
        return len(live) == len(SPOKES) and all(
            s["bucket_count"] and s["blocks"] and s["state"] == "NORMAL" for s in live
        )

    cl.wait_for("two spokes reporting NORMAL with buckets and blocks", ready, within)


def main() -> int:
    check_environment()
    work = Path(tempfile.mkdtemp(prefix="hubspoke-demo-"))
    with Lab("hsdemo") as lab:
        lan = lab.segment("lan", subnet="10.77.0.0/24")
        cl = ClusterLab.create(lab, lan, work)
        try:
            say(f"etcd {cl.etcd.endpoint} and the hub ({DB_IP}:{HUB_PORT}) in {cl.db.netns}")
            for name, ip in SPOKES.items():
                cl.add_spoke(name, ip).start()
                say(f"{name} ({ip}) in {cl.spokes[name].host.netns}, cluster mode")
            cl.add_hub().start(wait_ready=None)
            wait_ready(cl)
            say("the hub seeded scope lan (10.77.0.0/24) and gave each spoke buckets and blocks\n")

            clients: list[tuple[str, DhcpClient]] = []
            for n, kind in enumerate((Udhcpc, Dhclient, Dhcpcd), start=1):
                host = lab.host(f"client{n}", lan)
                clients.append((f"client{n}", kind(host, work / f"client{n}")))
            for name, client in clients:
                t0 = time.monotonic()
                client.start()
                ev = client.wait_for(BOUND_REASONS, timeout=60)
                ms = (time.monotonic() - t0) * 1000
                say(
                    f"{name} ({client.program}): got {ev.ip} from {ev.server_id} in {ms:.0f} ms;"
                    f" router {','.join(ev.routers)}, dns {','.join(ev.dns)},"
                    f" domain {ev.domain}, lease {ev.lease_time} s"
                )

            say(f"\nbindings read back from etcd ({ROOT}/leases/lan/):")
            say(f"{'address':<14} {'state':<8} {'hardware':<18} {'spoke':<8} {'expires in':>10}")
            now = time.time()
            rows = sorted(cl.bindings().items(), key=lambda kv: tuple(map(int, kv[0].split("."))))
            for ip, b in rows:
                hw = ":".join(b["hw"][i : i + 2] for i in range(0, len(b["hw"]), 2))
                left = b["expires"] - now
                say(f"{ip:<14} {b['state']:<8} {hw:<18} {b['node']:<8} {left:>9.0f}s")

            say("\n$ hubspoke status")
            say(cli(cl, "status").rstrip())
            say("\n$ hubspoke leases --scope lan")
            say(cli(cl, "leases", "--scope", "lan").rstrip())
            for _, client in clients:
                client.stop()
        except (subprocess.SubprocessError, OSError, RuntimeError, AssertionError) as e:
            say(f"\ndemo failed: {e}")
            for proc in [*cl.spokes.values(), *cl.hubs.values()]:
                say(f"--- {proc.name} ---\n{proc.tail(15)}")
            return 1
        finally:
            cl.close()
    say("\nstopped: hub, spokes, etcd, clients and every namespace removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
