"""Scope documents as stored under `config/scopes/`: encoding, validation, the served set.

Pure; no I/O (`hubspoke.scopes.store` does the reads and writes and re-exports these names). A
stored value is compact JSON `{"v":1,"scope":{...}}` where `scope` is one scope in the YAML
schema of `deploy/spoke.example.yaml`, validated by `hubspoke.scopes.parse` with the real option
table (`hubspoke.dhcp.options`). Field paths name scopes, not positions: `scopes[lan].pools[0]`.

The served set: each stored document valid on its own, then together (unique names, no shared
subnet, pool, relay address or interface). A set made invalid behind the hub's back (etcdctl)
is resolved deterministically by `effective_scopes`: the earlier-created scope wins, the later
one is reported and skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hubspoke.config import ConfigError, kind_of
from hubspoke.etcd.records import KeyValue
from hubspoke.keys import Keys
from hubspoke.model import Scope
from hubspoke.scopes.parse import OptionCodec, check_scope_set, default_option_codec, parse_scope

__all__ = [
    "SCOPE_DOC_VERSION",
    "StoredScope",
    "check_set",
    "decode_scope_doc",
    "effective_scopes",
    "encode_scope_doc",
    "parse_scope_doc",
    "scope_path",
    "stored_scope",
    "validate_scope_set",
]

SCOPE_DOC_VERSION = 1


def scope_path(name: str) -> str:
    """How error paths name a stored scope: `scopes[<name>]`."""
    return f"scopes[{name}]"


def encode_scope_doc(doc: Mapping[str, object]) -> bytes:
    """The stored value for one scope document; ConfigError if it is not plain JSON data.

    Integer mapping keys (option codes, as YAML gives them) become strings, as JSON has them.
    """
    name = doc.get("name")
    where = scope_path(name) if isinstance(name, str) else "scope"
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
                raise ConfigError(f"{path}.{key}", f"not plain JSON data: a {kind_of(key)} key")
            out[str(key)] = _plain(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ConfigError(path, f"not plain JSON data: a {kind_of(value)}")


def decode_scope_doc(raw: bytes, name: str) -> dict[str, Any]:
    """The scope document inside a stored value (not yet validated); ConfigError if unreadable."""
    where = scope_path(name)
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
    scope = parse_scope(doc, scope_path(name), codec or default_option_codec())
    if scope.name != name:
        raise ConfigError(
            f"{scope_path(name)}.name", f"{scope.name!r} differs from the key's {name!r}"
        )
    return scope


def check_set(scopes: Sequence[Scope]) -> None:
    """check_scope_set, with paths naming scopes (`scopes[lan]`) instead of list positions."""
    try:
        check_scope_set(scopes, "scopes")
    except ConfigError as e:

        def named(text: str) -> str:
            return re.sub(r"scopes\[(\d+)\]", lambda m: scope_path(scopes[int(m[1])].name), text)

        raise ConfigError(named(e.path), named(e.reason)) from None


def validate_scope_set(docs: Mapping[str, Mapping[str, object]]) -> tuple[Scope, ...]:
    """Every document valid on its own (named as its key) and all of them together.

    Returns the scopes sorted by name; ConfigError names the field path (`scopes[<name>]...`).
    """
    scopes = tuple(parse_scope_doc(encode_scope_doc(docs[n]), n) for n in sorted(docs))
    check_set(scopes)
    return scopes


# -- stored entries and the served set ------------------------------------------------------


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
        check_set(accepted)
    except ConfigError:
        accepted = []
        for _, name, scope in valid:
            try:
                check_set([*accepted, scope])
            except ConfigError as e:
                refused[name] = e
            else:
                accepted.append(scope)
    return tuple(sorted(accepted, key=lambda s: s.name)), refused
