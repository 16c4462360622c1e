"""An uncertain commit (etcd did not say) is never reported as a conflict while the key is as
we left it: the proposal may still commit under a new etcd leader. A broken connection is
re-read within what is left of the commit's one deadline; a timeout is not re-read at all (a
hung etcd costs one deadline, then the outcome is unknown)."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from hubspoke.etcd.errors import EtcdTimeout, EtcdUnavailable, EtcdUncertain
from hubspoke.etcd.records import KeyValue
from hubspoke.keys import Keys
from hubspoke.model import Binding, BindingState, Versioned
from hubspoke.values import encode_binding
from spoke.dhcp.decisions import BindingWrite
from spoke.leases.store import Committed, Conflict, LeaseStore
from spoke.leases.table import BindingTable

IP = IPv4Address("10.0.0.5")


def binding(client: bytes, expires: float = 2.0) -> Binding:
    return Binding("lan", IP, BindingState.BOUND, client, client[-6:], 1.0, expires, "s1")


class UncertainEtcd:
    """Every txn fails with `error`; `get` answers with `current` and records its deadline."""

    def __init__(self, current: KeyValue | None, error: EtcdUncertain) -> None:
        self.current = current
        self.error = error
        self.reads: list[float | None] = []

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    async def get(self, key: bytes, deadline: float | None = None) -> KeyValue | None:
        self.reads.append(deadline)
        return self.current


def store(current: KeyValue | None, error: EtcdUncertain | None = None) -> LeaseStore:
    client: Any = UncertainEtcd(current, error or EtcdUnavailable("connection reset"))
    return LeaseStore(client, Keys("/t"), BindingTable(), "s1", commit_timeout=2.0)


def kv(value: bytes, mod: int) -> KeyValue:
    return KeyValue(key=Keys("/t").lease("lan", IP), value=value, create_revision=3,
                    mod_revision=mod, version=1, lease=0)  # fmt: skip


async def test_absent_key_after_an_uncertain_create_stays_unknown() -> None:
    with pytest.raises(EtcdUnavailable):
        await store(None).commit(BindingWrite("lan", IP, binding(b"\x01a"), None, None))


async def test_unchanged_key_after_an_uncertain_update_stays_unknown() -> None:
    old = kv(encode_binding(binding(b"\x01a")), 7)  # the renewal's binding is not there yet
    write = BindingWrite("lan", IP, binding(b"\x01a", expires=9.0), Versioned(3, 7), None)
    with pytest.raises(EtcdUnavailable):
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


async def test_the_reread_gets_only_what_is_left_of_the_deadline() -> None:
    s = store(None)
    with pytest.raises(EtcdUnavailable):
        await s.commit(BindingWrite("lan", IP, binding(b"\x01a"), None, None))
    client: Any = s._client
    assert len(client.reads) == 1
    left = client.reads[0]
    assert left is not None and 0 < left <= 2.0


async def test_a_timeout_is_not_reread() -> None:
    write = BindingWrite("lan", IP, binding(b"\x01a"), None, None)
    # etcd would show our value if asked: a hung etcd is still not asked a second time.
    s = store(kv(encode_binding(write.binding), 9), EtcdTimeout("deadline exceeded"))
    with pytest.raises(EtcdTimeout):
        await s.commit(write)
    client: Any = s._client
    assert client.reads == []
