"""Command line of the hub: `python -m hub.main --config FILE` (or `hubspoke-hub`).

Refuses a bad configuration at start, naming the field and the reason (exit status 2).
SIGTERM and SIGINT stop it gracefully: it resigns the hub role (the next campaigner takes over
at once) and revokes its etcd session.
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

import grpc  # type: ignore[import-untyped]

from hub.assign import Member
from hub.campaign import HubCampaign, RunningServer, ServerFactory
from hub.config import HubConfig, HubRoleConfig, load_hub_config
from hub.etcd.client import EtcdClient
from hub.etcd.errors import EtcdError
from hub.etcd.session import Session
from hub.grpcserver import ServerTls, build_server
from hub.keys import Keys
from hub.logs import setup_logging
from hub.scopeconfig import ConfigError
from hub.view import HubView

log = logging.getLogger("hubspoke.hub")


class _Server:
    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    async def stop(self) -> None:
        await self.server.stop(grace=1.0)


def server_factory(cfg: HubRoleConfig) -> ServerFactory:
    """Starts the management and report API for one term as hub."""
    g = cfg.grpc
    tls = None
    if g.cert_file is not None and g.key_file is not None:
        tls = ServerTls(g.cert_file, g.key_file, g.client_ca_file)

    async def serve(view: HubView) -> RunningServer:
        server, port = await build_server(view, listen=g.listen, tokens=g.tokens, tls=tls)
        await server.start()
        log.info("hub.api_listening", extra={"listen": g.listen, "port": port})
        return _Server(server)

    return serve


async def run_hub(cfg: HubConfig, stop: asyncio.Event) -> None:
    keys = Keys(cfg.etcd.root)
    client = await EtcdClient.connect(cfg.etcd.client)
    try:
        while not stop.is_set():
            try:
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
                campaign = HubCampaign(client, keys, cfg.role, session, server_factory(cfg.role))
                await campaign.run(stop)
            except EtcdError as e:
                log.warning("hub.etcd_error", extra={"error": repr(e)})
            finally:
                with contextlib.suppress(EtcdError):
                    await session.close()
    finally:
        await client.close()


async def _amain(cfg: HubConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_hub(cfg, stop)


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
