"""A `LeaseStore` of one lan scope (10.9.0.0/24) against the test etcd, with every block
claimed and loaded, and the bound `Binding`s the lease tests write into it."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from hubspoke.model import Binding, BindingState, Pool, Scope
from spoke.leases.store import LeaseStore
from spoke.leases.table import BindingTable

SCOPE = Scope(
    name="lan",
    subnet=IPv4Network("10.9.0.0/24"),
    pools=(Pool(IPv4Address("10.9.0.10"), IPv4Address("10.9.0.200")),),
)
IP = IPv4Address("10.9.0.20")


def binding(client: bytes, node: str = "spoke-1", ip: IPv4Address = IP) -> Binding:
    return Binding(
        scope="lan",
        ip=ip,
        state=BindingState.BOUND,
        client_key=client,
        hw_address=client[-6:],
        start=1000.0,
        expires=2000.0,
        node=node,
    )


async def store_for(etcd: EtcdClient, key_prefix: bytes, node: str = "spoke-1") -> LeaseStore:
    keys = Keys(key_prefix.decode().rstrip("/"))
    store = LeaseStore(etcd, keys, BindingTable(), node)
    await store.claim_all_blocks([SCOPE])
    await store.load()
    return store
