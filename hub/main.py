"""Command line of the hub: `python -m hub.main --config FILE` (or `hubspoke-hub`).

Refuses a bad configuration at start, naming the field and the reason (exit status 2).
SIGTERM and SIGINT stop it gracefully: it resigns the hub role (the next campaigner takes over
at once), revokes its etcd session and flushes its spans. With `tracing.otlp_endpoint` set, the
report service's spans (`hub.report`, children of each spoke's report span) are exported.
Prometheus metrics (`hubspoke_hub_*`, hub/metrics.py) are served at `metrics.listen` (default
127.0.0.1:9168; `metrics: null` turns them off) by the elected hub and by a standby alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from hub.campaign import HubCampaign, grpc_server_factory
from hub.config import HubConfig, load_hub_config
from hub.health import HealthServer, hand_port_to_hub
from hub.metrics import HubMetrics
from hubspoke.assign import Member
from hubspoke.config import ConfigError
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdError
from hubspoke.etcd.session import Session
from hubspoke.keys import Keys
from hubspoke.observe.logs import setup_logging
from hubspoke.observe.prometheus import MetricsServer
from hubspoke.observe.tracing import setup_tracing, shutdown_tracing
from hubspoke.scopes.store import seed_configured_scopes

log = logging.getLogger("hubspoke.hub")


async def run_hub(
    cfg: HubConfig, stop: asyncio.Event, tracer_provider: TracerProvider | None = None
) -> None:
    keys = Keys(cfg.etcd.root)
    # Served on standby too: an operator sees which hub leads (hubspoke_hub_leader).
    metrics = HubMetrics()
    metrics_server = (
        MetricsServer(metrics, cfg.metrics.host, cfg.metrics.port)
        if cfg.metrics is not None
        else None
    )
    client = await EtcdClient.connect(cfg.etcd.client)
    serve = grpc_server_factory(cfg.role, tracer_provider)
    # A standby hub holds the API port with the health service alone (liveness probes, container
    # health checks); the elected hub's server takes the port over. Port 0 cannot be shared.
    health = HealthServer(cfg.role.grpc.listen) if cfg.role.grpc.port != 0 else None
    if health is not None:
        try:
            await health.start()
            serve = hand_port_to_hub(serve, health)
        except OSError as e:
            log.warning("hub.health_port_failed", extra={"error": str(e)})
            health = None
    seeded = not cfg.role.seed_scopes
    try:
        if metrics_server is not None:
            await metrics_server.start()
        while not stop.is_set():
            try:
                if not seeded:
                    # First start: the configured scopes go into etcd whichever process wins the
                    # election (a hub-eligible spoke may win it first), and only while no scope
                    # is stored; after that the API owns them.
                    await seed_configured_scopes(client, keys, cfg.role.seed_scopes)
                    seeded = True
                session = await Session.open(client, ttl=cfg.role.session_ttl)
            except EtcdError as e:
                log.warning("hub.session_failed", extra={"error": repr(e)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                continue
            try:
                member = Member(
                    node=cfg.node,
                    lease=session.lease_id,
                    role="hub",
                    hub_eligible=True,
                    grpc_address=cfg.role.grpc.advertise or cfg.role.grpc.listen,
                    started=time.time(),
                )
                await client.put(keys.member(cfg.node), member.encode(), lease=session.lease_id)
                campaign = HubCampaign(client, keys, cfg.role, session, serve, metrics=metrics)
                await campaign.run(stop)
            except EtcdError as e:
                log.warning("hub.etcd_error", extra={"error": repr(e)})
            finally:
                lost = not session.is_alive
                with contextlib.suppress(EtcdError):
                    await session.close()
                if lost:
                    # Lost (quorum, an outage): etcd may have kept the lease alive meanwhile,
                    # and our old election key would stand ahead in the queue until it expires.
                    with contextlib.suppress(EtcdError):
                        await client.lease_revoke(session.lease_id, deadline=1.0)
    finally:
        if metrics_server is not None:
            await metrics_server.stop()
        if health is not None:
            await health.stop()
        await client.close()


async def _amain(cfg: HubConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    provider = setup_tracing(cfg.tracing, cfg.node)
    try:
        await run_hub(cfg, stop, provider)
    finally:
        await shutdown_tracing(provider)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubspoke-hub", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="hub YAML configuration")
    args = parser.parse_args(argv)
    try:
        cfg = load_hub_config(args.config)
    except ConfigError as e:
        print(f"hubspoke-hub: bad configuration {args.config}: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg.log.level, cfg.log.format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_amain(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
