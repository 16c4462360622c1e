"""`Keys.lease_group`: the /16 prefix a big load reads with a bounded end."""

from __future__ import annotations

from ipaddress import IPv4Address

from hubspoke.keys import Keys


def test_the_group_of_a_lease_key_is_its_scope_and_slash_16() -> None:
    keys = Keys("/r")
    key = keys.lease("lan", IPv4Address("10.20.30.40"))
    group = keys.lease_group(key)
    assert group == b"/r/leases/lan/10.20."
    assert key.startswith(group)
    assert not keys.lease("lan", IPv4Address("10.2.30.40")).startswith(group)
    assert not keys.lease("lan", IPv4Address("10.200.0.1")).startswith(group)
    assert keys.lease_group(b"/r/leases/lan/garbage") is None
    assert keys.lease_group(keys.member("spoke-1")) is None
