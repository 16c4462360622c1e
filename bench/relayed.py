"""Reference targets driven through the relayed topology, for a like-for-like cluster comparison.

Owns `KeaHaRelayed`: the Kea HA hot-standby pair of `bench/kea.py` with perfdhcp on the edge
segment behind the same dhcrelay the cluster target uses, the relay sending every request to
both peers (the standby receives and discards client traffic, as it would in production).
"""

from __future__ import annotations

from bench.kea import THREADS, KeaHaPair
from bench.relay import start_relay
from bench.target import BenchEnv


class KeaHaRelayed(KeaHaPair):
    """Kea HA hot-standby pair behind dhcrelay (both peers as helper addresses)."""

    name = "kea-ha-relay"
    summary = (
        f"kea-dhcp4 2.2 HA hot-standby as kea-ha ({THREADS} threads each), perfdhcp on an edge "
        "segment behind dhcrelay sending every request to both peers"
    )
    relayed = True

    def start(self, env: BenchEnv) -> None:
        super().start(env)
        self._address = start_relay(env, [str(i.host.address().ip) for i in self._instances])
