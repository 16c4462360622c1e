"""The typed reader every configuration parser uses. Pure; no I/O.

`Section` reads a mapping from YAML, JSON or an API call with typed accessors and refuses
unknown keys (with a did-you-mean); every refusal is a `ConfigError` naming the field path and
the reason.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from typing import Literal


class ConfigError(ValueError):
    """A configuration refused at start: `path` names the field, `reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class _Req(enum.Enum):
    REQUIRED = 0


REQUIRED: Literal[_Req.REQUIRED] = _Req.REQUIRED


def child(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def kind_of(value: object) -> str:
    return "null" if value is None else type(value).__name__


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping from config, with its field path, read with typed accessors.

    A null value counts as absent: the default applies, or a required field is reported.
    """

    path: str
    data: Mapping[str, object]

    @classmethod
    def of(
        cls,
        value: object,
        path: str,
        allowed: Collection[str],
        required: Collection[str] = (),
    ) -> Section:
        if not isinstance(value, Mapping):
            raise ConfigError(path or "(top)", f"expected a mapping, got {kind_of(value)}")
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(child(path, key), "keys must be strings")
            if key not in allowed:
                near = difflib.get_close_matches(key, list(allowed), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(child(path, key), f"unknown key{hint}")
        for key in required:
            if value.get(key) is None:
                raise ConfigError(child(path, key), "required")
        return cls(path, value)

    def at(self, key: str) -> str:
        return child(self.path, key)

    def raw(self, key: str) -> object:
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _value(self, key: str, default: object) -> object:
        value = self.data.get(key)
        if value is None:
            if default is REQUIRED:
                raise ConfigError(self.at(key), "required")
            return default
        return value

    def integer(
        self,
        key: str,
        default: int | Literal[_Req.REQUIRED] = REQUIRED,
        *,
        lo: int = 0,
        hi: int | None = None,
    ) -> int:
        return check_int(self._value(key, default), self.at(key), lo, hi)

    def optional_integer(self, key: str, *, lo: int = 0, hi: int | None = None) -> int | None:
        value = self.data.get(key)
        return None if value is None else check_int(value, self.at(key), lo, hi)

    def number(
        self,
        key: str,
        default: float | Literal[_Req.REQUIRED] = REQUIRED,
        *,
        lo: float = 0.0,
        hi: float | None = None,
    ) -> float:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.at(key), f"expected a number, got {kind_of(value)}")
        if value < lo or (hi is not None and value > hi):
            top = "" if hi is None else f" and <= {hi}"
            raise ConfigError(self.at(key), f"{value} must be >= {lo}{top}")
        return float(value)

    def text(self, key: str, default: str | Literal[_Req.REQUIRED] = REQUIRED) -> str:
        return check_str(self._value(key, default), self.at(key))

    def optional_text(self, key: str) -> str | None:
        value = self.data.get(key)
        return None if value is None else check_str(value, self.at(key))

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise ConfigError(self.at(key), f"{value!r} is not one of {', '.join(choices)}")
        return value

    def items(self, key: str) -> Iterator[tuple[str, object]]:
        """The elements of a list field (absent or null: none), each with its path."""
        value = self.data.get(key)
        if value is None:
            return
        if not isinstance(value, list | tuple):
            raise ConfigError(self.at(key), f"expected a list, got {kind_of(value)}")
        for i, element in enumerate(value):
            yield f"{self.at(key)}[{i}]", element

    def texts(self, key: str, *, unique: bool = True) -> tuple[str, ...]:
        out: list[str] = []
        for path, element in self.items(key):
            text = check_str(element, path)
            if unique and text in out:
                raise ConfigError(path, f"{text!r} is listed twice")
            out.append(text)
        return tuple(out)


def check_int(value: object, path: str, lo: int, hi: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {kind_of(value)}")
    if value < lo or (hi is not None and value > hi):
        top = "" if hi is None else f" and <= {hi}"
        raise ConfigError(path, f"{value} must be >= {lo}{top}")
    return value


def check_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {kind_of(value)}")
    if not value:
        raise ConfigError(path, "must not be empty")
    return value


def parse_ipv4(value: object, path: str) -> IPv4Address:
    try:
        return IPv4Address(check_str(value, path).strip())
    except AddressValueError:
        raise ConfigError(path, f"{value!r} is not an IPv4 address") from None


def parse_hex_bytes(value: object, path: str, *, max_len: int) -> bytes:
    """`02:00:5e:00:00:01`, `02-00-5e-00-00-01` or `02005e000001`."""
    text = check_str(value, path).strip().lower()
    digits = text.replace(":", "").replace("-", "")
    parts = re.split(r"[:-]", text)
    ok = re.fullmatch(r"[0-9a-f]+", digits) is not None and len(digits) % 2 == 0
    if ok and len(parts) > 1:
        ok = all(len(p) == 2 for p in parts)
    if not ok:
        raise ConfigError(path, f"{value!r} is not hex octets like 01:02:03")
    raw = bytes.fromhex(digits)
    if len(raw) > max_len:
        raise ConfigError(path, f"{len(raw)} octets, at most {max_len}")
    return raw
