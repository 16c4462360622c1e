"""Generated code for the subset of etcd's v3 API that hubspoke uses (see proto/hubspoke/api/etcd)."""
