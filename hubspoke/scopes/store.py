"""The only code that writes scope definitions to etcd (`config/scopes/<name>`); it also reads
and decodes them for the hub's mirror and the spoke's watch.

The stored value, its validation and the served set are defined in `hubspoke.scopes.docs` (pure; its
names are re-exported here). Every write normalises the document through JSON first and
validates what will be stored, so a spoke parses exactly what the hub checked.

Interfaces in the cluster: `interfaces` is optional in a stored scope (spokes differ). A spoke
serves a stored scope on direct traffic when the scope names the receiving interface, else when
the scope's subnet contains the address of the receiving interface; relayed traffic by giaddr
(inside the subnet, or listed in `relay_addresses`).

Writes through this module keep the served set valid: a new or changed scope is checked
against the scopes served now (`effective_scopes`).

Writes are one transaction each, comparing the written key (`create_revision == 0` for a
create, else its `mod_revision`), the `mod_revision` of every other stored scope read to
validate the new set (when they fit in one transaction), and the caller's `fence` (the hub
epoch). Two concurrent creates of different new names are not caught by those compares: the
hub serialises its scope writes (one writer per epoch).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hubspoke.config import ConfigError
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdUncertain
from hubspoke.etcd.records import Compare, KeyValue, Op, RangeResult, prefix_end
from hubspoke.keys import KeyError_, Keys
from hubspoke.scopes.docs import (
    SCOPE_DOC_VERSION,
    StoredScope,
    check_set,
    decode_scope_doc,
    effective_scopes,
    encode_scope_doc,
    parse_scope_doc,
    stored_scope,
    validate_scope_set,
)
from hubspoke.scopes.parse import SCOPE_NAME

__all__ = [
    "SCOPE_DOC_VERSION",
    "AlreadyExists",
    "Conflict",
    "FenceLost",
    "NotFound",
    "ScopeStoreError",
    "StoredScope",
    "create_scope",
    "decode_scope_doc",
    "delete_scope",
    "effective_scopes",
    "encode_scope_doc",
    "load_scopes",
    "parse_scope_doc",
    "read_scopes",
    "seed_configured_scopes",
    "seed_scopes",
    "stored_scope",
    "update_scope",
    "validate_scope_set",
]

log = logging.getLogger("hubspoke.scopes")

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops (compares and each branch count separately)
WRITE_ATTEMPTS = 5  # re-read and re-validate after a concurrent change, at most this often


class ScopeStoreError(Exception):
    """A scope write that etcd refused for a reason other than validation."""


class NotFound(ScopeStoreError, LookupError):
    """No stored scope has this name."""


class AlreadyExists(ScopeStoreError):
    """A scope with this name is already stored."""


class Conflict(ScopeStoreError):
    """The stored scopes changed while we wrote (or differ from the revision the caller named)."""


class FenceLost(ScopeStoreError):
    """The caller's fence compares failed: this process is no longer the hub it was."""


# -- etcd --------------------------------------------------------------------------------------


async def read_scopes(client: EtcdClient, keys: Keys) -> tuple[dict[str, StoredScope], int]:
    """Every stored scope at one revision, parsed; returns (entries by name, revision)."""
    kvs, revision = await client.range_prefix_all(keys.scopes_prefix())
    return _entries(keys, kvs), revision


def _entries(keys: Keys, kvs: Iterable[KeyValue]) -> dict[str, StoredScope]:
    out: dict[str, StoredScope] = {}
    for kv in kvs:
        try:
            entry = stored_scope(keys, kv)
        except KeyError_:
            log.warning("scopes.bad_key", extra={"key": kv.key.decode(errors="replace")})
            continue
        out[entry.name] = entry
    return out


def _revisions(keys: Keys, kvs: Iterable[KeyValue]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kv in kvs:
        try:
            out[keys.parse_scope(kv.key)] = kv.mod_revision
        except KeyError_:
            continue
    return out


async def load_scopes(client: EtcdClient, keys: Keys) -> tuple[dict[str, dict[str, Any]], int]:
    """Every readable stored scope document by name, and the revision read at.

    Documents are returned as stored (not validated); unreadable values are logged
    (`scopes.invalid`) and left out.
    """
    entries, revision = await read_scopes(client, keys)
    docs: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        try:
            docs[name] = decode_scope_doc(entry.raw, name)
        except ConfigError as e:
            log.warning("scopes.invalid", extra={"scope": name, "reason": str(e)})
    return docs, revision


async def seed_scopes(
    client: EtcdClient,
    keys: Keys,
    docs: Mapping[str, Mapping[str, object]],
    fence: Sequence[Compare] = (),
) -> int | None:
    """Write `docs` (the hub YAML's scopes) if and only if `config/scopes/` is empty.

    Validates the set first (ConfigError). One transaction: every key's create_revision == 0
    and the caller's fence. Returns the revision written, or None when scopes already exist
    (nothing is written). Raises FenceLost when the fence fails on an empty prefix.
    """
    if not docs:
        return None
    validate_scope_set(docs)
    if len(docs) + len(fence) > MAX_TXN_OPS:
        raise ConfigError("scopes", f"{len(docs)} scopes exceed one etcd transaction to seed")
    prefix = keys.scopes_prefix()
    if (await client.range_prefix(prefix, limit=1, keys_only=True)).kvs:
        return None
    puts = {keys.scope(n): encode_scope_doc(d) for n, d in docs.items()}
    compares = [Compare.create_revision(k, "=", 0) for k in puts]
    result = await client.txn(
        [*compares, *fence],
        [Op.put(k, v) for k, v in puts.items()],
        [Op.get(prefix, range_end=prefix_end(prefix), limit=1)],
    )
    if result.succeeded:
        log.info("scopes.seeded", extra={"scopes": sorted(docs), "revision": result.revision})
        return result.revision
    if _range(result.responses).kvs:
        return None
    raise FenceLost("scope seeding refused: the fence does not hold")


async def seed_configured_scopes(
    client: EtcdClient,
    keys: Keys,
    seeds: Sequence[Mapping[str, object]],
    fence: Sequence[Compare] = (),
) -> int | None:
    """`seed_scopes` for a configuration's `scopes` list (each document keyed by its name)."""
    if not seeds:
        return None
    docs = {str(d["name"]): d for d in seeds}
    seeded = await seed_scopes(client, keys, docs, fence)
    if seeded is not None:
        log.info("hub.scopes_seeded", extra={"scopes": len(docs)})
    return seeded


def _range(responses: Sequence[object]) -> RangeResult:
    for r in responses:
        if isinstance(r, RangeResult):
            return r
    raise ScopeStoreError("transaction answered without its range")


async def create_scope(
    client: EtcdClient, keys: Keys, doc: Mapping[str, object], fence: Sequence[Compare] = ()
) -> int:
    """Store a new scope; returns the revision. ConfigError, AlreadyExists, Conflict, FenceLost."""
    name = _doc_name(doc)
    return await _write(client, keys, name, doc, fence, expected=None, must_exist=False)


async def update_scope(
    client: EtcdClient,
    keys: Keys,
    doc: Mapping[str, object],
    fence: Sequence[Compare] = (),
    *,
    expected_revision: int | None = None,
) -> int:
    """Replace a stored scope (named by `doc`); returns the revision.

    With `expected_revision`, refuse (Conflict) unless the key's mod_revision is still that.
    ConfigError, NotFound, Conflict, FenceLost.
    """
    name = _doc_name(doc)
    return await _write(client, keys, name, doc, fence, expected_revision, must_exist=True)


async def delete_scope(
    client: EtcdClient,
    keys: Keys,
    name: str,
    fence: Sequence[Compare] = (),
    *,
    expected_revision: int | None = None,
) -> int:
    """Remove a stored scope; returns the revision. NotFound, Conflict, FenceLost."""
    return await _write(client, keys, name, None, fence, expected_revision, must_exist=True)


def _doc_name(doc: Mapping[str, object]) -> str:
    """The document's name, checked before it is used to build a key."""
    if not isinstance(doc, Mapping):
        raise ConfigError("scope", f"expected a mapping, got {type(doc).__name__}")
    name = doc.get("name")
    if not isinstance(name, str) or not SCOPE_NAME.fullmatch(name):
        raise ConfigError("scope.name", f"{name!r} must match {SCOPE_NAME.pattern}")
    return name


async def _write(
    client: EtcdClient,
    keys: Keys,
    name: str,
    doc: Mapping[str, object] | None,
    fence: Sequence[Compare],
    expected: int | None,
    *,
    must_exist: bool,
) -> int:
    """Read, validate the new served set, write in one guarded transaction; retry on races."""
    key = keys.scope(name)
    value = None if doc is None else encode_scope_doc(doc)
    scope = None if value is None else parse_scope_doc(value, name)
    prefix = keys.scopes_prefix()
    for _ in range(WRITE_ATTEMPTS):
        entries, _ = await read_scopes(client, keys)
        current = entries.get(name)
        if must_exist and current is None:
            raise NotFound(f"scope {name!r} does not exist")
        if not must_exist and current is not None:
            raise AlreadyExists(f"scope {name!r} already exists")
        if expected is not None and current is not None and current.mod_revision != expected:
            raise Conflict(f"scope {name!r} is at revision {current.mod_revision}, not {expected}")
        others = {n: e for n, e in entries.items() if n != name}
        if scope is not None:
            served, _refused = effective_scopes(others.values())
            check_set([*served, scope])
        compares = [
            Compare.create_revision(key, "=", 0)
            if current is None
            else Compare.mod_revision(key, "=", current.mod_revision)
        ]
        guarded: dict[str, int] = {}  # a delete cannot make the set invalid: no need to guard
        if scope is not None and len(others) + 1 + len(fence) <= MAX_TXN_OPS:
            guarded = {n: e.mod_revision for n, e in others.items()}
            compares += [Compare.mod_revision(keys.scope(n), "=", r) for n, r in guarded.items()]
        op = Op.delete(key) if value is None else Op.put(key, value)
        try:
            result = await client.txn(
                [*compares, *fence], [op], [Op.get(prefix, range_end=prefix_end(prefix))]
            )
        except EtcdUncertain:
            kv = await client.get(key)
            if (kv is None and value is None) or (kv is not None and kv.value == value):
                return kv.mod_revision if kv is not None else (await client.status()).revision
            raise
        if result.succeeded:
            log.info(
                "scopes.written",
                extra={"scope": name, "op": op.kind.value, "revision": result.revision},
            )
            return result.revision
        now = _revisions(keys, _range(result.responses).kvs)
        own = None if current is None else current.mod_revision
        if now.get(name) == own and all(now.get(n) == r for n, r in guarded.items()):
            raise FenceLost(f"scope {name!r} not written: the fence does not hold")
    raise Conflict(f"scope {name!r}: the stored scopes kept changing; try again")
