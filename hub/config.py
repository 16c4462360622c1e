"""The hub's typed configuration, validated at start. Pure apart from reading the file.

A bad file is refused naming the field path and the reason (`ConfigError`). The hub role is
the same whether it runs in the `hub` process or inside a hub-eligible spoke: `HubRoleConfig`
is what both hand to `hub.campaign.HubCampaign`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubspoke.config import ConfigError, Section
from hubspoke.procconfig import (
    EtcdSection,
    LogSection,
    MetricsSection,
    TracingSection,
    existing_file,
    host_port,
    parse_etcd,
    parse_log,
    parse_metrics,
    parse_node,
    parse_tracing,
    read_yaml,
)
from hubspoke.scopes.parse import default_option_codec, parse_scopes


@dataclass(frozen=True, slots=True)
class GrpcSection:
    """Where the hub serves gRPC, and who may call it."""

    host: str = "0.0.0.0"
    port: int = 7500
    advertise: str | None = None  # host:port written into the election value
    tokens: tuple[str, ...] = field(default=(), repr=False)
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PlannerSection:
    interval: float = 1.0
    reserve_fraction: float = 0.25
    low_watermark: int = 16
    block_size: int = 64
    max_interrupted: float = 30.0
    mclt: float = 60.0
    max_moves_per_cycle: int = 8


class Model(enum.Enum):
    """How buckets are shared. `load-balancing`: evenly among the live spokes (hub-spoke, and
    the one-to-one split). `hot-standby`: the `primary` owns every bucket while it is live; the
    others (weight 0) get buckets only when it is down or drained."""

    LOAD_BALANCING = "load-balancing"
    HOT_STANDBY = "hot-standby"


@dataclass(frozen=True, slots=True)
class HubRoleConfig:
    """What the hub role needs, wherever it runs."""

    node: str
    grpc: GrpcSection = field(default_factory=GrpcSection)
    planner: PlannerSection = field(default_factory=PlannerSection)
    session_ttl: int = 3
    seed_scopes: tuple[dict[str, Any], ...] = ()
    model: Model = Model.LOAD_BALANCING
    primary: str | None = None

    def weight(self, node: str) -> float:
        """`node`'s share of the buckets under the model (0: a standby)."""
        if self.model is Model.HOT_STANDBY and node != self.primary:
            return 0.0
        return 1.0


def parse_model(top: Section) -> tuple[Model, str | None]:
    """`model` and `primary` of a hub section: hot-standby needs a primary."""
    model = Model(top.choice("model", [m.value for m in Model], Model.LOAD_BALANCING.value))
    primary = top.optional_text("primary")
    if primary is not None:
        primary = parse_node(primary, top.at("primary"))
    if model is Model.HOT_STANDBY and primary is None:
        raise ConfigError(top.at("primary"), "required with model: hot-standby")
    return model, primary


@dataclass(frozen=True, slots=True)
class HubConfig:
    role: HubRoleConfig
    etcd: EtcdSection
    metrics: MetricsSection | None
    tracing: TracingSection
    log: LogSection

    @property
    def node(self) -> str:
        return self.role.node


def parse_grpc(value: object, path: str = "grpc") -> GrpcSection:
    keys = ("listen", "advertise", "tokens", "cert_file", "key_file", "client_ca_file")
    s = Section.of(value, path, keys)
    host, port = host_port(s.text("listen", "0.0.0.0:7500"), f"{path}.listen")
    advertise = s.optional_text("advertise")
    if advertise is not None:
        host_port(advertise, f"{path}.advertise")
    elif host in ("0.0.0.0", "::"):
        raise ConfigError(f"{path}.advertise", "required when listen is a wildcard address")
    tokens = s.texts("tokens") if s.has("tokens") else ()
    for i, t in enumerate(tokens):
        if len(t) < 8:
            raise ConfigError(f"{path}.tokens[{i}]", "a token needs at least 8 characters")
    cert, key = existing_file(s, "cert_file"), existing_file(s, "key_file")
    if (cert is None) != (key is None):
        raise ConfigError(f"{path}.cert_file", "cert_file and key_file go together")
    ca = existing_file(s, "client_ca_file")
    if ca is not None and cert is None:
        raise ConfigError(f"{path}.client_ca_file", "mTLS needs cert_file and key_file too")
    return GrpcSection(host, port, advertise, tokens, cert, key, ca)


def parse_planner(value: object, path: str = "planner") -> PlannerSection:
    keys = (
        "interval",
        "reserve_fraction",
        "low_watermark",
        "block_size",
        "max_interrupted",
        "mclt",
        "max_moves_per_cycle",
    )
    s = Section.of(value, path, keys)
    return PlannerSection(
        interval=s.number("interval", 1.0, lo=0.1, hi=60.0),
        reserve_fraction=s.number("reserve_fraction", 0.25, lo=0.0, hi=0.9),
        low_watermark=s.integer("low_watermark", 16, lo=0, hi=1 << 20),
        block_size=s.integer("block_size", 64, lo=1, hi=1 << 16),
        max_interrupted=s.number("max_interrupted", 30.0, lo=0.0, hi=86400.0),
        mclt=s.number("mclt", 60.0, lo=0.0, hi=86400.0),
        max_moves_per_cycle=s.integer("max_moves_per_cycle", 8, lo=1, hi=128),
    )


def parse_role(top: Section) -> HubRoleConfig:
    """The hub-role fields of a `hub` section or a hub config's top level."""
    scopes_raw = top.raw("scopes")
    if scopes_raw is not None:
        parse_scopes(scopes_raw, top.at("scopes"), default_option_codec())  # refuse bad seeds
    seeds = tuple(dict(d) for d in scopes_raw) if isinstance(scopes_raw, list) else ()
    model, primary = parse_model(top)
    return HubRoleConfig(
        node=parse_node(top.text("node"), top.at("node")),
        grpc=parse_grpc(top.raw("grpc") or {}, top.at("grpc")),
        planner=parse_planner(top.raw("planner") or {}, top.at("planner")),
        session_ttl=top.integer("session_ttl", 3, lo=2, hi=300),
        seed_scopes=seeds,
        model=model,
        primary=primary,
    )


def parse_hub_config(data: object) -> HubConfig:
    top = Section.of(
        data,
        "",
        (
            "node",
            "etcd",
            "grpc",
            "planner",
            "session_ttl",
            "metrics",
            "tracing",
            "log",
            "scopes",
            "model",
            "primary",
        ),
        required=("node",),
    )
    metrics = None
    if "metrics" not in top.data or top.has("metrics"):
        metrics = parse_metrics(top.raw("metrics") or {"listen": "127.0.0.1:9168"})
    return HubConfig(
        role=parse_role(top),
        etcd=parse_etcd(top.raw("etcd") or {}),
        metrics=metrics,
        tracing=parse_tracing(top.raw("tracing") or {}, "hubspoke-hub"),
        log=parse_log(top.raw("log") or {}),
    )


def load_hub_config(path: str | Path) -> HubConfig:
    """Read and validate a YAML file; `ConfigError` names the field path and the reason."""
    return parse_hub_config(read_yaml(path))
