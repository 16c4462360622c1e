"""What hub and spokes share: the etcd client, generated gRPC code, keys, stored values, the
model, blocks, scopes, DHCP options, configuration, observability, gRPC plumbing and the
failover state names. Imports neither `hub` nor `spoke`.

Importing this package sets one process default before grpc loads: gRPC core reads
`GRPC_EXPERIMENTS` once, when `grpc` is imported, and its EventEngine client and listener are
turned off (the measurement is in bench/README.md). An operator's own `GRPC_EXPERIMENTS` stays.
"""

import os as _os

GRPC_EXPERIMENTS_DEFAULT = "-event_engine_client,-event_engine_listener"
_os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS_DEFAULT)
