"""hubspoke.scopes.store against a real etcd: seeding once, fenced create/update/delete, races."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from hubspoke.config import ConfigError
from hubspoke.etcd import Compare, EtcdClient, TxnResult
from hubspoke.etcd.records import Op
from hubspoke.keys import Keys
from hubspoke.scopes.store import (
    AlreadyExists,
    Conflict,
    FenceLost,
    NotFound,
    create_scope,
    delete_scope,
    encode_scope_doc,
    load_scopes,
    read_scopes,
    seed_scopes,
    update_scope,
)


def lan(**over: object) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "lan",
        "subnet": "10.0.0.0/24",
        "pools": ["10.0.0.100-10.0.0.199"],
        "options": {"dns_servers": ["10.0.0.53"]},
    }
    doc.update(over)
    return doc


def branch(**over: object) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "branch", "subnet": "10.1.0.0/22", "pools": ["10.1.0.10"]}
    doc.update(over)
    return doc


def keys_for(key_prefix: bytes) -> Keys:
    return Keys(key_prefix.decode().rstrip("/"))


async def epoch_fence(etcd: EtcdClient, key_prefix: bytes) -> tuple[list[Compare], list[Compare]]:
    """A stand-in for the hub epoch: (a fence that holds, a fence that does not)."""
    key = key_prefix + b"hub/leader"
    put = await etcd.put(key, b"hub-1")
    return [Compare.create_revision(key, "=", put.revision)], [
        Compare.create_revision(key, "=", put.revision + 1000)
    ]


async def test_seed_writes_only_into_an_empty_prefix(etcd: EtcdClient, key_prefix: bytes) -> None:
    keys = keys_for(key_prefix)
    good, bad = await epoch_fence(etcd, key_prefix)
    with pytest.raises(FenceLost):
        await seed_scopes(etcd, keys, {"lan": lan()}, bad)
    assert (await load_scopes(etcd, keys))[0] == {}
    revision = await seed_scopes(etcd, keys, {"lan": lan(), "branch": branch()}, good)
    assert revision is not None
    docs, at = await load_scopes(etcd, keys)
    assert at >= revision
    assert set(docs) == {"lan", "branch"}
    assert docs["lan"]["options"] == {"dns_servers": ["10.0.0.53"]}
    again = await seed_scopes(etcd, keys, {"other": branch(name="other", subnet="10.9.0.0/24",
                                                           pools=["10.9.0.9"])}, good)  # fmt: skip
    assert again is None
    assert set((await load_scopes(etcd, keys))[0]) == {"lan", "branch"}


async def test_seed_refuses_an_invalid_set(etcd: EtcdClient, key_prefix: bytes) -> None:
    keys = keys_for(key_prefix)
    wide = branch(name="wide", subnet="10.0.0.0/16", pools=["10.0.7.1"])
    with pytest.raises(ConfigError) as exc:
        await seed_scopes(etcd, keys, {"lan": lan(), "wide": wide})
    assert exc.value.path == "scopes[wide].subnet"
    assert "overlaps scopes[lan].subnet" in exc.value.reason
    assert (await load_scopes(etcd, keys))[0] == {}


async def test_create_update_delete_with_a_fence(etcd: EtcdClient, key_prefix: bytes) -> None:
    keys = keys_for(key_prefix)
    good, bad = await epoch_fence(etcd, key_prefix)
    created = await create_scope(etcd, keys, lan(), good)
    with pytest.raises(AlreadyExists):
        await create_scope(etcd, keys, lan(), good)
    with pytest.raises(FenceLost):
        await create_scope(etcd, keys, branch(), bad)
    assert set((await load_scopes(etcd, keys))[0]) == {"lan"}

    updated = await update_scope(etcd, keys, lan(options={"dns_servers": ["10.0.0.54"]}), good)
    assert updated > created
    with pytest.raises(FenceLost):
        await update_scope(etcd, keys, lan(lease_time=60, min_lease_time=30), bad)
    entries, _ = await read_scopes(etcd, keys)
    assert entries["lan"].mod_revision == updated
    assert entries["lan"].raw == encode_scope_doc(lan(options={"dns_servers": ["10.0.0.54"]}))
    with pytest.raises(NotFound):
        await update_scope(etcd, keys, branch(), good)

    with pytest.raises(FenceLost):
        await delete_scope(etcd, keys, "lan", bad)
    with pytest.raises(Conflict):
        await delete_scope(etcd, keys, "lan", good, expected_revision=created)
    await delete_scope(etcd, keys, "lan", good, expected_revision=updated)
    with pytest.raises(NotFound):
        await delete_scope(etcd, keys, "lan", good)
    assert (await load_scopes(etcd, keys))[0] == {}


@pytest.mark.parametrize(
    ("doc", "path", "reason"),
    [
        (branch(name="wide", subnet="10.0.0.0/16", pools=["10.0.7.1"]), "scopes[wide].subnet",
         "overlaps scopes[lan].subnet"),
        (branch(pools=["10.0.0.5"]), "scopes[branch].pools[0]", "not inside subnet"),
        (branch(options={"renewal_time": 5}), "scopes[branch].options.renewal_time",
         "set by the server"),
        (branch(name="Bad/Name"), "scope.name", "must match"),
    ],
)  # fmt: skip
async def test_writes_validate_the_new_set(
    etcd: EtcdClient, key_prefix: bytes, doc: dict[str, Any], path: str, reason: str
) -> None:
    keys = keys_for(key_prefix)
    await create_scope(etcd, keys, lan())
    with pytest.raises(ConfigError) as exc:
        await create_scope(etcd, keys, doc)
    assert exc.value.path == path
    assert reason in exc.value.reason
    assert set((await load_scopes(etcd, keys))[0]) == {"lan"}


async def test_update_into_a_conflict_is_refused(etcd: EtcdClient, key_prefix: bytes) -> None:
    keys = keys_for(key_prefix)
    await create_scope(etcd, keys, lan())
    await create_scope(etcd, keys, branch())
    with pytest.raises(ConfigError) as exc:
        await update_scope(etcd, keys, branch(subnet="10.0.0.0/23", pools=["10.0.1.5"]))
    assert exc.value.path == "scopes[branch].subnet"


class RacingClient(EtcdClient):
    """A real client that lets another writer act just before its first transaction."""

    def __init__(self, real: EtcdClient, race: Op) -> None:
        super().__init__(real.config)
        self.race: Op | None = race
        self.txns = 0

    async def txn(
        self,
        compares: Iterable[Compare],
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        *,
        deadline: float | None = None,
    ) -> TxnResult:
        self.txns += 1
        if self.race is not None:
            race, self.race = self.race, None
            await super().txn([], [race])
        return await super().txn(compares, success, failure, deadline=deadline)


async def test_a_concurrent_change_is_revalidated(etcd: EtcdClient, key_prefix: bytes) -> None:
    keys = keys_for(key_prefix)
    await create_scope(etcd, keys, lan())
    await create_scope(etcd, keys, branch())
    # branch moves next to lan while lan is being widened: the retry sees the overlap
    move = Op.put(
        keys.scope("branch"),
        encode_scope_doc(branch(subnet="10.0.1.0/24", pools=["10.0.1.5"])),
    )
    racing = RacingClient(etcd, move)
    try:
        with pytest.raises(ConfigError) as exc:
            await update_scope(racing, keys, lan(subnet="10.0.0.0/23"))
        assert exc.value.path == "scopes[lan].subnet"
        assert racing.txns == 1
        # an unrelated concurrent change: the write is retried and succeeds
        other = Op.put(keys.scope("branch"), encode_scope_doc(branch(lease_time=600)))
        racing.race = other
        revision = await update_scope(racing, keys, lan(lease_time=900))
        assert racing.txns == 3
    finally:
        await racing.close()
    entries, _ = await read_scopes(etcd, keys)
    assert entries["lan"].mod_revision == revision
    assert entries["branch"].raw == encode_scope_doc(branch(lease_time=600))
