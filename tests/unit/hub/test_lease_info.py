"""The lease API shows a bound lease whose expiry passed as `expired` (issue 13)."""

from __future__ import annotations

from ipaddress import IPv4Address

from hub.api.model import LeaseInfo
from hubspoke.model import Binding, BindingState

NOW = 1_700_000_000.0


def binding(state: BindingState, expires: float) -> Binding:
    mac = bytes.fromhex("020000000001")
    return Binding(
        "lan", IPv4Address("10.0.0.5"), state, b"\x01" + mac, mac, NOW - 60, expires, "s1"
    )


def test_a_live_bound_lease_is_bound() -> None:
    assert (
        LeaseInfo.from_binding(binding(BindingState.BOUND, NOW + 1), NOW).state
        is BindingState.BOUND
    )


def test_a_bound_lease_past_its_expiry_is_expired() -> None:
    info = LeaseInfo.from_binding(binding(BindingState.BOUND, NOW), NOW)
    assert info.state is BindingState.EXPIRED and info.expires == NOW


def test_released_and_declined_keep_their_state() -> None:
    for state in (BindingState.RELEASED, BindingState.DECLINED):
        assert LeaseInfo.from_binding(binding(state, NOW - 5), NOW).state is state
