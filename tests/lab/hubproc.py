"""Hub processes run in-process (`hub.main.run_hub`) against the test etcd: their configuration."""

from __future__ import annotations

from typing import Any

from hub.config import HubConfig, parse_hub_config
from tests.lab.etcd import EtcdServer, free_port


def hub_config(
    node: str, etcd_server: EtcdServer, root: str, *, port: int | None = None, **extra: Any
) -> HubConfig:
    """A hub on 127.0.0.1 (`port`, else a free one), session TTL 2 s, no metrics unless
    `extra` says otherwise; `extra` keys replace the defaults (scopes, planner, metrics...)."""
    data: dict[str, Any] = {
        "node": node,
        "etcd": {"endpoints": [etcd_server.endpoint], "root": root},
        "grpc": {"listen": f"127.0.0.1:{port if port is not None else free_port()}"},
        "session_ttl": 2,
        "metrics": None,
    }
    return parse_hub_config(data | extra)
