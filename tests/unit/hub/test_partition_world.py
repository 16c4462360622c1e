"""The planner's small world (tests/lab/planworld.py) converging, and `apply` and
`complete_handovers` themselves."""

from __future__ import annotations

import pytest

from hub.plan.planner import (
    CreateBlock,
    Current,
    GrantBlock,
    PlanParams,
    RemoveBlock,
    RequestHandover,
    StaleAction,
    apply,
    complete_handovers,
)
from hubspoke.assign import BlockRecord
from tests.lab.planworld import (
    check_steady,
    converge,
    live,
    scope,
)

# -- apply and complete_handovers ----------------------------------------------------------------


def test_apply_refuses_what_etcd_would_refuse() -> None:
    cur = Current(blocks={("s", "10.0.0.0-10.0.0.63"): (BlockRecord("a"), 5)})
    with pytest.raises(StaleAction):
        apply(cur, [GrantBlock("s", "10.0.0.0-10.0.0.63", "b", 5, "x")])  # not in the reserve
    with pytest.raises(StaleAction):
        apply(cur, [CreateBlock("s", "10.0.0.0-10.0.0.63", "x")])  # exists
    with pytest.raises(StaleAction):
        apply(cur, [RequestHandover("s", "10.0.0.0-10.0.0.63", "a", None, 4, "x")])  # revision
    with pytest.raises(StaleAction):
        apply(cur, [RemoveBlock("s", "10.0.0.0-10.0.0.63", 5, "x")])  # owned


def test_handover_round_trip() -> None:
    key = ("s", "10.0.0.0-10.0.0.63")
    cur = Current(blocks={key: (BlockRecord("a"), 5)})
    cur = apply(cur, [RequestHandover(*key, "a", "b", 5, "x")])
    assert cur.blocks[key] == (BlockRecord("a", "b", "x"), 6)
    assert complete_handovers(cur, frozenset({"b"})) == cur  # only a may commit it
    done = complete_handovers(cur, frozenset({"a"}))
    assert done.blocks[key][0].owner == "b" and done.blocks[key][1] == 7


def test_small_world_converges() -> None:
    scopes = [scope("lan", 10, 1000)]
    spokes = [live("a"), live("b")]
    cur, cycles = converge(scopes, spokes, Current(), PlanParams(down_hold=60))
    check_steady(scopes, spokes, cur)
    assert 1 < cycles < 10
