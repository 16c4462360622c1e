"""A deterministic simulation of the cluster protocol: virtual time, an in-memory etcd, faults.

- `loop`: the virtual-time event loop (`run`), refusing real I/O and threads.
- `etcd`: `SimEtcd`, one etcd cluster in memory, its faults and a client per process; built on
  `mvcc` (the key space and leases), `apply` (one request applied as etcd 3.4 does), `watch`
  (watch and keep-alive streams), `election` (the v3election service) and `net` (the wire:
  `SimTransport` is the real transport over simulated channels, with latency and partitions).
- `faults`: faults as plain data and `random_schedule`; `harness.simulate` runs one scenario.
- `workload`: a seeded etcd workload under random faults with its invariants
  (`python -m tests.sim.workload`); `world`: the cluster (spokes, hub, DHCP clients;
  `python -m tests.sim`).
"""
