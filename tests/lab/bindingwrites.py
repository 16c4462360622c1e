"""`BindingWrite`s numbered from 0 for the journal tests: write `i` binds 10.0.0.10 + i in scope
"lan" to its own client (a new binding in block 10.0.0.0-63, or an update of a stored one)."""

from __future__ import annotations

from ipaddress import IPv4Address

from hubspoke.model import Binding, BindingState, Block, Versioned
from spoke.dhcp.decisions import BindingWrite


def write(i: int, *, new: bool = True) -> BindingWrite:
    ip = IPv4Address("10.0.0.10") + i
    binding = Binding(
        scope="lan",
        ip=ip,
        state=BindingState.BOUND,
        client_key=b"\x01\x01" + bytes([0, 1, 2, 3, 4, i % 256]),
        hw_address=bytes([0, 1, 2, 3, 4, i % 256]),
        start=1000.0 + i,
        expires=1060.0 + i,
        node="s1",
        hostname=f"h{i}" if i % 2 else None,
    )
    block = Block("lan", IPv4Address("10.0.0.0"), IPv4Address("10.0.0.63"))
    if new:
        return BindingWrite("lan", ip, binding, None, (block, 42))
    return BindingWrite("lan", ip, binding, Versioned(7, 9), None)
