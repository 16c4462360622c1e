"""Command line of the spoke: `python -m spoke.main --config FILE` (or `hubspoke-spoke`).

Refuses a bad configuration at start, naming the field and the reason (exit status 2).
SIGTERM and SIGINT stop it gracefully: sockets closed, in-flight commits finished, the etcd
session revoked.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from hubspoke.observe.logs import setup_logging
from spoke.config import ConfigError, load_config
from spoke.runtime import Spoke
from spoke.transport import TransportError

log = logging.getLogger("hubspoke.spoke")


async def _amain(spoke: Spoke) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await spoke.run(stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubspoke-spoke", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="spoke YAML configuration")
    parser.add_argument(
        "--ready-file", type=Path, help="written once the spoke serves DHCP (for supervisors)"
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"hubspoke-spoke: bad configuration {args.config}: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg.log.level, cfg.log.format)
    try:
        asyncio.run(_amain(Spoke(cfg, ready_file=args.ready_file)))
    except TransportError as e:
        log.error("spoke.transport_error", extra={"error": str(e)})
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
