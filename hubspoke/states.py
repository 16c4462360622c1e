"""The failover state names, one enum for spokes and hub. Pure.

A spoke is in one of the first six (its machine is `spoke.failover.machine`); `PARTNER_DOWN`
is how the hub reports a spoke whose session ended, never a state a spoke is in itself. The
API and logs use the values (`COMMUNICATION-INTERRUPTED`); metrics use `metric_label` (lower
case).
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    STARTUP = "STARTUP"
    NORMAL = "NORMAL"
    COMMUNICATION_INTERRUPTED = "COMMUNICATION-INTERRUPTED"
    RECOVER = "RECOVER"
    RESOLUTION_INTERRUPTED = "RESOLUTION-INTERRUPTED"
    MAINTENANCE = "MAINTENANCE"
    PARTNER_DOWN = "PARTNER-DOWN"

    @property
    def metric_label(self) -> str:
        """The `hubspoke_state{state}` / `hubspoke_hub_spokes{state}` label: lower case."""
        return self.value.lower()


SPOKE_STATES = tuple(s for s in State if s is not State.PARTNER_DOWN)
"""The states a spoke's own machine can be in."""

NOT_SERVING_NORMALLY = frozenset(
    {
        State.COMMUNICATION_INTERRUPTED,
        State.RECOVER,
        State.RESOLUTION_INTERRUPTED,
        State.MAINTENANCE,
    }
)
"""A live spoke in one of these cannot take new buckets (no etcd, or drained)."""
