"""The hub, and what hub and spokes share (etcd client, model, keys, gRPC API).

Importing this package sets one process default before grpc loads: gRPC core reads
`GRPC_EXPERIMENTS` once, when `grpc` is imported, and with its EventEngine client and listener
every completion crosses two threads (EventEngine's poller, then grpc.aio's) before it reaches
the event loop. Without them (the older, long-standing I/O manager), a cluster behind a relay
completed 2,701-2,968 DORA/s at 3,000/s offered against 2,397-2,733 with them, six
alternating 6 s steps each (`python -m bench.probe --target cluster --rates 3000,3000,3000`;
bench/README.md, fourth session); a lone spoke is unchanged. An operator's own
`GRPC_EXPERIMENTS` is left as it is.
"""

import os as _os

GRPC_EXPERIMENTS_DEFAULT = "-event_engine_client,-event_engine_listener"
_os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS_DEFAULT)
