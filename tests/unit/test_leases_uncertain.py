"""An uncertain commit (etcd did not say) is never reported as a conflict while the key is as
we left it: the proposal may still commit under a new etcd leader."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from hub.etcd.errors import EtcdTimeout
from hub.etcd.records import KeyValue
from hub.keys import Keys
from hub.model import Binding, BindingState, Versioned
from hub.values import encode_binding
from spoke.bindings import BindingTable
from spoke.dhcp.decisions import BindingWrite
from spoke.leases import Committed, Conflict, LeaseStore

IP = IPv4Address("10.0.0.5")


def binding(client: bytes, expires: float = 2.0) -> Binding:
    return Binding("lan", IP, BindingState.BOUND, client, client[-6:], 1.0, expires, "s1")


class UncertainEtcd:
    """Every txn times out; `get` answers with `current`."""

    def __init__(self, current: KeyValue | None) -> None:
        self.current = current

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        raise EtcdTimeout("deadline exceeded")

    async def get(self, key: bytes, **kwargs: Any) -> KeyValue | None:
        return self.current


def store(current: KeyValue | None) -> LeaseStore:
    client: Any = UncertainEtcd(current)
    return LeaseStore(client, Keys("/t"), BindingTable(), "s1")


def kv(value: bytes, mod: int) -> KeyValue:
    return KeyValue(key=Keys("/t").lease("lan", IP), value=value, create_revision=3,
                    mod_revision=mod, version=1, lease=0)  # fmt: skip


async def test_absent_key_after_an_uncertain_create_stays_unknown() -> None:
    with pytest.raises(EtcdTimeout):
        await store(None).commit(BindingWrite("lan", IP, binding(b"\x01a"), None, None))


async def test_unchanged_key_after_an_uncertain_update_stays_unknown() -> None:
    old = kv(encode_binding(binding(b"\x01a")), 7)  # the renewal's binding is not there yet
    write = BindingWrite("lan", IP, binding(b"\x01a", expires=9.0), Versioned(3, 7), None)
    with pytest.raises(EtcdTimeout):
        await store(old).commit(write)


async def test_our_value_read_back_is_a_commit() -> None:
    write = BindingWrite("lan", IP, binding(b"\x01a"), None, None)
    out = await store(kv(encode_binding(write.binding), 9)).commit(write)
    assert out == Committed(Versioned(3, 9))


async def test_someone_elses_value_is_a_conflict() -> None:
    other = kv(encode_binding(binding(b"\x01b")), 9)
    out = await store(other).commit(BindingWrite("lan", IP, binding(b"\x01a"), None, None))
    assert isinstance(out, Conflict) and out.current is not None
    assert out.current[0].client_key == b"\x01b"
