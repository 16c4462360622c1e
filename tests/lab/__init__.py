"""The test lab: everything shared by the tests, the benchmarks (bench/) and the demo (scripts/).

Real components started for a run (etcd, hub and spoke processes, network namespaces, real DHCP
clients, captures, an OTLP receiver, a Docker engine), the published bounds, and the pure fakes
and builders the unit tests share (a scripted DHCP client, hand-built packets, planner worlds).
Nothing here is a test; no module outside this package is imported by another test module.
"""
