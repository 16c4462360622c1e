"""A deterministic simulation of the cluster protocol: virtual time, an in-memory etcd."""
