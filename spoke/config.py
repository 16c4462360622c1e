"""The spoke's one typed, frozen configuration, read from YAML and validated at start.

Owns the file format (documented in `deploy/spoke.example.yaml`) and every rule a spoke's
configuration must satisfy; scopes are parsed by `hubspoke.scopes.parse`. Reads the file and checks
that the TLS files it names exist; nothing else touches the outside world.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from hub import config as hubcfg
from hubspoke.config import ConfigError, Section, parse_ipv4
from hubspoke.model import Scope
from hubspoke.procconfig import (
    NODE_NAME,
    TracingSection,
    existing_file,
    parse_etcd,
    parse_log,
    parse_metrics,
    parse_tracing,
    read_yaml,
)
from hubspoke.procconfig import EtcdSection as EtcdConfig
from hubspoke.procconfig import LogSection as LogConfig
from hubspoke.procconfig import MetricsSection as MetricsConfig
from hubspoke.procconfig import host_port as _host_port
from hubspoke.rpc.client import ClientTls
from hubspoke.scopes.parse import OptionCodec, default_option_codec, parse_scopes

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "DhcpConfig",
    "EtcdConfig",
    "FailoverConfig",
    "HubRoleConfig",
    "LogConfig",
    "MetricsConfig",
    "Mode",
    "SpokeConfig",
    "TracingConfig",
    "TracingSection",
    "default_option_codec",
    "health_listen",
    "hub_role_config",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True, slots=True)
class DhcpConfig:
    interfaces: tuple[str, ...]
    port: int = 67
    client_port: int = 68
    server_id: IPv4Address | None = None
    offer_lifetime: float = 30.0
    decline_probation: float = 600.0
    reuse_delay: float = 10.0
    max_inflight_commits: int = 256
    max_queue_delay: float = 0.5


SERVICE_NAME = "hubspoke-spoke"

TracingConfig = functools.partial(TracingSection, service_name=SERVICE_NAME)
"""The spoke's tracing section: `hubspoke.procconfig.TracingSection`, named "hubspoke-spoke"."""


class Mode(enum.Enum):
    """`standalone`: scopes from the YAML, the spoke owns every block and bucket (no hub).
    `cluster`: scopes, blocks and buckets come from etcd, assigned by the hub."""

    STANDALONE = "standalone"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Cluster mode: the etcd session, the report stream to the hub and its bearer token.

    `grpc_listen`: where a spoke that is not hub-eligible serves its gRPC health port (the
    hub probes it when the spoke's report stream breaks: refused means crashed); advertised
    in its member record with the interface's address in place of a wildcard host.
    """

    report_interval: float = 1.0
    session_ttl: int = 3
    token: str | None = field(default=None, repr=False)
    grpc_listen: str = "0.0.0.0:7501"
    hub_tls: ClientTls | None = None  # TLS (or mTLS) to a hub whose API serves TLS
    hub_tls_server_name: str | None = None  # the name to verify, when not the dialled host


@dataclass(frozen=True, slots=True)
class HubRoleConfig:
    """Whether this spoke may run the hub role, where its gRPC listens and is reached; for the
    role itself, the bucket model (`model`, `primary`), the planner, and the scopes it seeds
    into etcd when none are stored (one-to-one deployments have no hub process to seed them)."""

    eligible: bool = False
    listen: str = "0.0.0.0:7500"
    advertise: str | None = None
    model: hubcfg.Model = hubcfg.Model.LOAD_BALANCING
    primary: str | None = None
    planner: hubcfg.PlannerSection = field(default_factory=hubcfg.PlannerSection)
    seed_scopes: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    """COMMUNICATION-INTERRUPTED: etcd lost after `interrupted_after` s without a keep-alive;
    new allocations stop `max_interrupted` s after the last one (keep it <= the hub planner's
    `max_interrupted`); leases capped at `mclt` s; bindings journaled to `journal`
    (None: /var/lib/hubspoke/<node>.journal)."""

    interrupted_after: float = 2.0
    max_interrupted: float = 30.0
    mclt: int = 60
    journal: Path | None = None

    def journal_path(self, node: str) -> Path:
        return self.journal or Path("/var/lib/hubspoke") / f"{node}.journal"


@dataclass(frozen=True, slots=True)
class SpokeConfig:
    node: str
    etcd: EtcdConfig
    dhcp: DhcpConfig
    metrics: MetricsConfig | None
    tracing: TracingSection
    log: LogConfig
    scopes: tuple[Scope, ...] = ()
    mode: Mode = Mode.STANDALONE
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    hub: HubRoleConfig = field(default_factory=HubRoleConfig)
    failover: FailoverConfig = field(default_factory=FailoverConfig)


def load_config(path: str | Path, codec: OptionCodec | None = None) -> SpokeConfig:
    """Read and validate a YAML file; `ConfigError` names the field path and the reason."""
    return parse_config(read_yaml(path), codec)


def parse_config(data: object, codec: OptionCodec | None = None) -> SpokeConfig:
    """Validate plain data (as YAML loads it) into a `SpokeConfig`."""
    top = Section.of(
        data,
        "",
        (
            "node",
            "mode",
            "etcd",
            "dhcp",
            "metrics",
            "tracing",
            "log",
            "scopes",
            "cluster",
            "hub",
            "failover",
        ),
        required=("node", "dhcp"),
    )
    node = top.text("node")
    if not NODE_NAME.fullmatch(node):
        raise ConfigError(
            "node", f"{node!r} must be 1-63 of [a-z0-9-], not starting or ending with -"
        )
    dhcp = _dhcp(top.raw("dhcp"))
    scopes = parse_scopes(top.raw("scopes"), "scopes", codec or default_option_codec())
    for i, scope in enumerate(scopes):
        for k, ifname in enumerate(scope.interfaces):
            if ifname not in dhcp.interfaces:
                raise ConfigError(
                    f"scopes[{i}].interfaces[{k}]", f"{ifname!r} is not one of dhcp.interfaces"
                )
    mode = _mode(top, scopes)
    metrics = None
    if "metrics" not in top.data or top.has("metrics"):
        metrics = parse_metrics(top.raw("metrics") or {})
    return SpokeConfig(
        node=node,
        etcd=parse_etcd(top.raw("etcd") or {}),
        dhcp=dhcp,
        metrics=metrics,
        tracing=parse_tracing(top.raw("tracing") or {}, SERVICE_NAME),
        log=parse_log(top.raw("log") or {}),
        scopes=scopes,
        mode=mode,
        cluster=_cluster(top.raw("cluster") or {}),
        hub=_hub_role(top.raw("hub") or {}),
        failover=_failover(top.raw("failover") or {}),
    )


def _failover(value: object) -> FailoverConfig:
    s = Section.of(value, "failover", ("interrupted_after", "max_interrupted", "mclt", "journal"))
    journal = s.optional_text("journal")
    if journal is not None and (not journal or journal.endswith("/")):
        raise ConfigError("failover.journal", f"{journal!r} is not a file path")
    return FailoverConfig(
        interrupted_after=s.number("interrupted_after", 2.0, lo=0.5, hi=300.0),
        max_interrupted=s.number("max_interrupted", 30.0, lo=0.0, hi=86400.0),
        mclt=s.integer("mclt", 60, lo=10, hi=86400),
        journal=Path(journal) if journal is not None else None,
    )


def _mode(top: Section, scopes: tuple[Scope, ...]) -> Mode:
    """Explicit, else standalone when the file lists scopes and cluster when it does not."""
    default = Mode.STANDALONE if scopes else Mode.CLUSTER
    mode = Mode(top.choice("mode", [m.value for m in Mode], default.value))
    if mode is Mode.STANDALONE and not scopes:
        raise ConfigError("scopes", "required in standalone mode (or set mode: cluster)")
    if mode is Mode.CLUSTER and scopes:
        raise ConfigError("scopes", "not allowed in cluster mode: scopes come from etcd")
    return mode


def _hub_tls(value: object) -> tuple[ClientTls | None, str | None]:
    if value is None:
        return None, None
    s = Section.of(value, "cluster.hub_tls", ("ca_file", "cert_file", "key_file", "server_name"))
    cert, key = existing_file(s, "cert_file"), existing_file(s, "key_file")
    if (cert is None) != (key is None):
        raise ConfigError("cluster.hub_tls.cert_file", "cert_file and key_file go together")
    return ClientTls(existing_file(s, "ca_file"), cert, key), s.optional_text("server_name")


def _cluster(value: object) -> ClusterConfig:
    s = Section.of(
        value,
        "cluster",
        ("report_interval", "session_ttl", "token", "grpc_listen", "hub_tls"),
    )
    token = s.optional_text("token")
    if token is not None and (not token or any(c.isspace() for c in token)):
        raise ConfigError("cluster.token", "must be non-empty, without spaces")
    grpc_listen = s.text("grpc_listen", "0.0.0.0:7501")
    _host_port(grpc_listen, "cluster.grpc_listen")
    hub_tls, server_name = _hub_tls(s.raw("hub_tls"))
    return ClusterConfig(
        report_interval=s.number("report_interval", 1.0, lo=0.1, hi=60.0),
        session_ttl=s.integer("session_ttl", 3, lo=2, hi=300),
        token=token,
        grpc_listen=grpc_listen,
        hub_tls=hub_tls,
        hub_tls_server_name=server_name,
    )


def _hub_role(value: object) -> HubRoleConfig:
    s = Section.of(
        value, "hub", ("eligible", "listen", "advertise", "model", "primary", "planner", "scopes")
    )
    eligible = s.raw("eligible")
    if eligible is None:
        eligible = False
    elif not isinstance(eligible, bool):
        raise ConfigError("hub.eligible", f"expected true or false, got {type(eligible).__name__}")
    listen = s.text("listen", "0.0.0.0:7500")
    _, listen_port = _host_port(listen, "hub.listen")
    if eligible and listen_port == 0:
        raise ConfigError("hub.listen", "a hub-eligible spoke needs a fixed port")
    advertise = s.optional_text("advertise")
    if advertise is not None:
        host, port = _host_port(advertise, "hub.advertise")
        if port == 0 or host in ("0.0.0.0", "::"):
            raise ConfigError("hub.advertise", f"{advertise!r} is not an address others can reach")
    model, primary = hubcfg.parse_model(s)
    planner = hubcfg.parse_planner(s.raw("planner") or {}, s.at("planner"))
    scopes_raw = s.raw("scopes")
    if scopes_raw is not None:
        parse_scopes(scopes_raw, s.at("scopes"), default_option_codec())  # refuse bad seeds
    seeds = tuple(dict(d) for d in scopes_raw) if isinstance(scopes_raw, list) else ()
    return HubRoleConfig(
        eligible=eligible,
        listen=listen,
        advertise=advertise,
        model=model,
        primary=primary,
        planner=planner,
        seed_scopes=seeds,
    )


def hub_role_config(cfg: SpokeConfig, interface_ip: IPv4Address) -> hubcfg.HubRoleConfig:
    """The hub role of a hub-eligible spoke: its node name, gRPC on `hub.listen`, advertised as
    `hub.advertise`, else as `listen` (`interface_ip` in place of a wildcard host); the cluster
    token as the API's token; the session TTL of its member key; the default planner."""
    host, port = _host_port(cfg.hub.listen, "hub.listen")
    advertise = cfg.hub.advertise
    if advertise is None:
        advertise = f"{interface_ip}:{port}" if host in ("0.0.0.0", "::") else cfg.hub.listen
    token = cfg.cluster.token
    return hubcfg.HubRoleConfig(
        node=cfg.node,
        grpc=hubcfg.GrpcSection(
            host=host, port=port, advertise=advertise, tokens=(token,) if token else ()
        ),
        session_ttl=cfg.cluster.session_ttl,
        planner=cfg.hub.planner,
        seed_scopes=cfg.hub.seed_scopes,
        model=cfg.hub.model,
        primary=cfg.hub.primary,
    )


def health_listen(cfg: SpokeConfig, interface_ip: IPv4Address) -> tuple[str, str]:
    """(listen, advertised address) of a cluster spoke's health port: `cluster.grpc_listen`,
    advertised with `interface_ip` in place of a wildcard host."""
    host, port = _host_port(cfg.cluster.grpc_listen, "cluster.grpc_listen")
    advertise = f"{interface_ip}:{port}" if host in ("0.0.0.0", "::") else cfg.cluster.grpc_listen
    return cfg.cluster.grpc_listen, advertise


def _dhcp(value: object) -> DhcpConfig:
    keys = (
        "interfaces",
        "port",
        "client_port",
        "server_id",
        "offer_lifetime",
        "decline_probation",
        "reuse_delay",
        "max_inflight_commits",
        "max_queue_delay",
    )
    s = Section.of(value, "dhcp", keys, required=("interfaces",))
    interfaces = s.texts("interfaces")
    if not interfaces:
        raise ConfigError("dhcp.interfaces", "at least one interface is required")
    for i, name in enumerate(interfaces):
        if len(name) > 15 or "/" in name or name in (".", ".."):
            raise ConfigError(f"dhcp.interfaces[{i}]", f"{name!r} is not an interface name")
    port = s.integer("port", 67, lo=1, hi=65535)
    client_port = s.integer("client_port", 68, lo=1, hi=65535)
    if port == client_port:
        raise ConfigError("dhcp.client_port", f"{client_port} is also the server port")
    server_id = parse_ipv4(s.raw("server_id"), s.at("server_id")) if s.has("server_id") else None
    return DhcpConfig(
        interfaces=interfaces,
        port=port,
        client_port=client_port,
        server_id=server_id,
        offer_lifetime=s.number("offer_lifetime", 30.0, lo=1.0, hi=3600.0),
        decline_probation=s.number("decline_probation", 600.0),
        reuse_delay=s.number("reuse_delay", 10.0),
        max_inflight_commits=s.integer("max_inflight_commits", 256, lo=1, hi=65536),
        max_queue_delay=s.number("max_queue_delay", 0.5, lo=0.0, hi=60.0),
    )
