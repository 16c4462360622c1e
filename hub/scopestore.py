"""The only code that reads or writes scope definitions in etcd (`config/scopes/<name>`).

A stored value is compact JSON `{"v":1,"scope":{...}}` where `scope` is one scope in the YAML
schema of `deploy/spoke.example.yaml`, validated by `hub.scopeconfig` with the real option table
(`hub.dhcp.options`). Every write normalises the document through JSON first and validates what
will be stored, so a spoke parses exactly what the hub checked.

Interfaces in the cluster: `interfaces` is optional in a stored scope (spokes differ). A spoke
serves a stored scope on direct traffic when the scope names the receiving interface, else when
the scope's subnet contains the address of the receiving interface; relayed traffic by giaddr
(inside the subnet, or listed in `relay_addresses`).

The served set: each stored document valid on its own, then together (unique names, no shared
subnet, pool, relay address or interface). Writes through this module keep the set valid. A
set made invalid behind our back (etcdctl) is resolved deterministically by `effective_scopes`:
the earlier-created scope wins, the later one is reported and skipped.

Writes are one transaction each, comparing the written key (`create_revision == 0` for a
create, else its `mod_revision`), the `mod_revision` of every other stored scope read to
validate the new set (when they fit in one transaction), and the caller's `fence` (the hub
epoch). Two concurrent creates of different new names are not caught by those compares: the
hub serialises its scope writes (one writer per epoch).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.etcd.client import EtcdClient
from hub.etcd.errors import EtcdUncertain
from hub.etcd.records import Compare, KeyValue, Op, RangeResult, prefix_end
from hub.keys import KeyError_, Keys
from hub.model import Scope
from hub.scopeconfig import (
    SCOPE_NAME,
    ConfigError,
    OptionCodec,
    check_scope_set,
    default_option_codec,
    parse_scope,
)

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
    "seed_scopes",
    "stored_scope",
    "update_scope",
    "validate_scope_set",
]

log = logging.getLogger("hubspoke.scopes")

SCOPE_DOC_VERSION = 1
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


def _where(name: str) -> str:
    return f"scopes[{name}]"


# -- documents (pure) ------------------------------------------------------------------------


def encode_scope_doc(doc: Mapping[str, object]) -> bytes:
    """The stored value for one scope document; ConfigError if it is not plain JSON data.

    Integer mapping keys (option codes, as YAML gives them) become strings, as JSON has them.
    """
    name = doc.get("name")
    where = _where(name) if isinstance(name, str) else "scope"
    plain = _plain(doc, where)
    try:
        text = json.dumps(
            {"v": SCOPE_DOC_VERSION, "scope": plain},
            separators=(",", ":"),
            sort_keys=True,
            allow_nan=False,
        )
    except ValueError as e:
        raise ConfigError(where, f"not plain JSON data: {e}") from None
    return text.encode()


def _plain(value: object, path: str) -> object:
    """`value` as JSON data: mappings with string keys, lists, strings, numbers, bools, null."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise ConfigError(f"{path}.{key}", f"not plain JSON data: a {_kind(key)} key")
            out[str(key)] = _plain(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ConfigError(path, f"not plain JSON data: a {_kind(value)}")


def _kind(value: object) -> str:
    return type(value).__name__


def decode_scope_doc(raw: bytes, name: str) -> dict[str, Any]:
    """The scope document inside a stored value (not yet validated); ConfigError if unreadable."""
    where = _where(name)
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(where, f"stored value is not JSON: {e}") from None
    if not isinstance(value, dict) or value.get("v") != SCOPE_DOC_VERSION:
        raise ConfigError(where, f"unsupported stored scope version: {raw[:40]!r}")
    doc = value.get("scope")
    if not isinstance(doc, dict):
        raise ConfigError(where, "stored value has no scope mapping")
    return doc


def parse_scope_doc(raw: bytes, name: str, codec: OptionCodec | None = None) -> Scope:
    """A stored value as a validated `Scope` named `name` (the key's name); ConfigError if not."""
    doc = decode_scope_doc(raw, name)
    scope = parse_scope(doc, _where(name), codec or default_option_codec())
    if scope.name != name:
        raise ConfigError(f"{_where(name)}.name", f"{scope.name!r} differs from the key's {name!r}")
    return scope


def _check_set(scopes: Sequence[Scope]) -> None:
    """check_scope_set, with paths naming scopes (`scopes[lan]`) instead of list positions."""
    try:
        check_scope_set(scopes, "scopes")
    except ConfigError as e:

        def named(text: str) -> str:
            return re.sub(r"scopes\[(\d+)\]", lambda m: _where(scopes[int(m[1])].name), text)

        raise ConfigError(named(e.path), named(e.reason)) from None


def validate_scope_set(docs: Mapping[str, Mapping[str, object]]) -> tuple[Scope, ...]:
    """Every document valid on its own (named as its key) and all of them together.

    Returns the scopes sorted by name; ConfigError names the field path (`scopes[<name>]...`).
    """
    scopes = tuple(parse_scope_doc(encode_scope_doc(docs[n]), n) for n in sorted(docs))
    _check_set(scopes)
    return scopes


# -- stored entries and the served set (pure) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredScope:
    """One `config/scopes/` key as read, parsed once: a `Scope` or why it is refused."""

    name: str
    raw: bytes
    create_revision: int
    mod_revision: int
    parsed: Scope | ConfigError


def stored_scope(keys: Keys, kv: KeyValue, codec: OptionCodec | None = None) -> StoredScope:
    """Parse one stored key; raise `KeyError_` if the key is not a scope key."""
    name = keys.parse_scope(kv.key)
    parsed: Scope | ConfigError
    try:
        parsed = parse_scope_doc(kv.value, name, codec)
    except ConfigError as e:
        parsed = e
    return StoredScope(name, kv.value, kv.create_revision, kv.mod_revision, parsed)


def effective_scopes(
    stored: Iterable[StoredScope],
) -> tuple[tuple[Scope, ...], dict[str, ConfigError]]:
    """The scopes to serve (sorted by name) and, by name, why each other one is skipped.

    Invalid documents are skipped; among valid ones that conflict, the earlier-created wins
    (checked one by one in creation order only when the whole set does not pass at once).
    """
    refused: dict[str, ConfigError] = {}
    valid: list[tuple[int, str, Scope]] = []
    for entry in stored:
        if isinstance(entry.parsed, ConfigError):
            refused[entry.name] = entry.parsed
        else:
            valid.append((entry.create_revision, entry.name, entry.parsed))
    valid.sort(key=lambda t: (t[0], t[1]))
    accepted = [s for _, _, s in valid]
    try:
        _check_set(accepted)
    except ConfigError:
        accepted = []
        for _, name, scope in valid:
            try:
                _check_set([*accepted, scope])
            except ConfigError as e:
                refused[name] = e
            else:
                accepted.append(scope)
    return tuple(sorted(accepted, key=lambda s: s.name)), refused


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
            _check_set([*served, scope])
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
