"""Configuration sections every process shares: etcd, metrics, tracing, logs. Pure; no I/O.

Each parser takes plain data (as YAML loads it) and returns a frozen dataclass, or raises
`ConfigError` naming the field path and the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hubspoke.config import ConfigError, Section
from hubspoke.etcd.transport import EtcdConfig as EtcdClientConfig
from hubspoke.keys import DEFAULT_ROOT

NODE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
ROOT_PATH = re.compile(r"(?:/[A-Za-z0-9_.-]+)+")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True, slots=True)
class EtcdSection:
    """How this process reaches etcd (`client`) and where its keys live (`root`)."""

    client: EtcdClientConfig = field(default_factory=EtcdClientConfig)
    root: str = DEFAULT_ROOT


@dataclass(frozen=True, slots=True)
class MetricsSection:
    host: str = "127.0.0.1"
    port: int = 9167


@dataclass(frozen=True, slots=True)
class TracingSection:
    otlp_endpoint: str | None = None
    insecure: bool = True
    sample_ratio: float = 1.0
    service_name: str = "hubspoke"
    max_queue_size: int = 65536
    max_export_batch_size: int = 512


@dataclass(frozen=True, slots=True)
class LogSection:
    level: str = "info"
    format: str = "json"


def parse_node(value: str, path: str = "node") -> str:
    if not NODE_NAME.fullmatch(value):
        raise ConfigError(
            path, f"{value!r} must be 1-63 of [a-z0-9-], not starting or ending with -"
        )
    return value


def host_port(text: str, path: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` into its parts; the port may be 0 (any free port)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9_.-]+):(\d{1,5})", text)
    if m is None:
        raise ConfigError(path, f"{text!r} is not host:port")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ConfigError(path, f"{text!r}: port {port} is above 65535")
    return host, port


def existing_file(s: Section, key: str) -> Path | None:
    name = s.optional_text(key)
    if name is None:
        return None
    p = Path(name)
    if not p.is_file():
        raise ConfigError(s.at(key), f"{name}: no such file")
    return p


def parse_etcd(value: object, path: str = "etcd") -> EtcdSection:
    keys = ("endpoints", "root", "ca_file", "cert_file", "key_file", "user", "password")
    s = Section.of(value, path, keys)
    endpoints = s.texts("endpoints") if s.has("endpoints") else ("127.0.0.1:2379",)
    if not endpoints:
        raise ConfigError(f"{path}.endpoints", "at least one endpoint is required")
    for i, ep in enumerate(endpoints):
        host_port(ep, f"{path}.endpoints[{i}]")
    root = s.text("root", DEFAULT_ROOT)
    if not ROOT_PATH.fullmatch(root):
        raise ConfigError(f"{path}.root", f"{root!r} must look like /name/v1 (no trailing /)")
    ca, cert, key = (existing_file(s, k) for k in ("ca_file", "cert_file", "key_file"))
    if (cert is None) != (key is None):
        raise ConfigError(f"{path}.cert_file", "cert_file and key_file go together")
    user, password = s.optional_text("user"), s.optional_text("password")
    if (user is None) != (password is None):
        raise ConfigError(f"{path}.user", "user and password go together")
    client = EtcdClientConfig(
        endpoints, ca_file=ca, cert_file=cert, key_file=key, user=user, password=password
    )
    return EtcdSection(client, root)


def parse_metrics(value: object, path: str = "metrics") -> MetricsSection:
    s = Section.of(value, path, ("listen",))
    host, port = host_port(s.text("listen", "127.0.0.1:9167"), f"{path}.listen")
    return MetricsSection(host, port)


def parse_tracing(value: object, service: str, path: str = "tracing") -> TracingSection:
    keys = (
        "otlp_endpoint",
        "insecure",
        "sample_ratio",
        "service_name",
        "max_queue_size",
        "max_export_batch_size",
    )
    s = Section.of(value, path, keys)
    endpoint = s.optional_text("otlp_endpoint")
    insecure = s.raw("insecure")
    if insecure is None:
        insecure = not (endpoint or "").startswith("https://")
    elif not isinstance(insecure, bool):
        raise ConfigError(
            f"{path}.insecure", f"expected true or false, got {type(insecure).__name__}"
        )
    if endpoint is not None:
        host_port(re.sub(r"^https?://", "", endpoint), f"{path}.otlp_endpoint")
    queue = s.integer("max_queue_size", 65536, lo=1)
    batch = s.integer("max_export_batch_size", 512, lo=1)
    if batch > queue:
        raise ConfigError(
            f"{path}.max_export_batch_size", f"{batch} is above max_queue_size {queue}"
        )
    return TracingSection(
        otlp_endpoint=endpoint,
        insecure=insecure,
        sample_ratio=s.number("sample_ratio", 1.0, lo=0.0, hi=1.0),
        service_name=s.text("service_name", service),
        max_queue_size=queue,
        max_export_batch_size=batch,
    )


def parse_log(value: object, path: str = "log") -> LogSection:
    s = Section.of(value, path, ("level", "format"))
    return LogSection(
        s.choice("level", LOG_LEVELS, "info"), s.choice("format", LOG_FORMATS, "json")
    )


_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: object, path: str = "", env: Mapping[str, str] | None = None) -> object:
    """`${NAME}` and `${NAME:-default}` in every string of `data` replaced from the environment
    (`$$` is a literal `$`). Containers give each replica its node name, address or token this
    way. A variable that is unset and has no default is a `ConfigError` naming the field."""
    environ = os.environ if env is None else env
    if isinstance(data, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            value = environ.get(name)
            if value is None:
                if default is None:
                    raise ConfigError(path or "(top)", f"environment variable {name} is not set")
                return default
            return value

        return _ENV_REF.sub(sub, data) if "$" in data else data
    if isinstance(data, dict):
        return {
            k: expand_env(v, f"{path}.{k}" if path else str(k), environ) for k, v in data.items()
        }
    if isinstance(data, list):
        return [expand_env(v, f"{path}[{i}]", environ) for i, v in enumerate(data)]
    return data


def read_yaml(path: str | Path) -> object:
    """A configuration file's data, `${NAME}` references expanded (`expand_env`); an unreadable
    file or bad YAML is a `ConfigError` naming the file (and the line, when YAML says which)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), f"cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(where, f"not valid YAML: {getattr(e, 'problem', None) or e}") from None
    return expand_env(data)
