"""The spoke's failover state machine: every (state x observation) pair, and the policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubspoke.states import SPOKE_STATES, State
from spoke.failover.machine import (
    Drained,
    EtcdFailing,
    EtcdOk,
    Failover,
    FailoverParams,
    JournalReplayed,
    Observation,
    Ready,
    SessionLost,
    Undrained,
)

S = State
P = FailoverParams(interrupted_after=2.0, max_interrupted=30.0, mclt=60)

OBSERVATIONS: dict[str, Observation] = {
    "ok": EtcdOk(last_keepalive=100.0),
    "blip": EtcdFailing(since_last_ok=1.0),
    "lost": EtcdFailing(since_last_ok=2.5),
    "commit-failed": EtcdFailing(since_last_ok=0.3, cause="commit"),
    "nospace": EtcdFailing(since_last_ok=0.3, cause="nospace"),
    "session-lost": SessionLost(),
    "ready": Ready(),
    "ready-journal": Ready(journal_pending=True),
    "replayed": JournalReplayed(),
    "drained": Drained(),
    "undrained": Undrained(),
}

# The expected next state of every pair; "-" keeps the state. Written out in full on purpose.
EXPECTED: dict[State, dict[str, State | str]] = {
    S.STARTUP: {
        "nospace": "-", "session-lost": "-",
        "ok": "-", "blip": "-", "lost": "-", "commit-failed": "-", "ready": S.NORMAL,
        "ready-journal": S.RECOVER, "replayed": "-", "drained": S.MAINTENANCE, "undrained": "-",
    },
    S.NORMAL: {
        "nospace": S.COMMUNICATION_INTERRUPTED, "session-lost": S.RECOVER,
        "ok": "-", "blip": "-", "lost": S.COMMUNICATION_INTERRUPTED,
        "commit-failed": S.COMMUNICATION_INTERRUPTED, "ready": "-", "ready-journal": "-",
        "replayed": "-", "drained": S.MAINTENANCE, "undrained": "-",
    },
    S.COMMUNICATION_INTERRUPTED: {
        "nospace": "-", "session-lost": "-",
        "ok": S.RECOVER, "blip": "-", "lost": "-", "commit-failed": "-", "ready": "-",
        "ready-journal": "-", "replayed": "-", "drained": "-", "undrained": "-",
    },
    S.RECOVER: {
        "nospace": S.RESOLUTION_INTERRUPTED, "session-lost": "-",
        "ok": "-", "blip": "-", "lost": S.RESOLUTION_INTERRUPTED,
        "commit-failed": S.RESOLUTION_INTERRUPTED, "ready": "-", "ready-journal": "-",
        "replayed": S.NORMAL, "drained": "-", "undrained": "-",
    },
    S.RESOLUTION_INTERRUPTED: {
        "nospace": "-", "session-lost": "-",
        "ok": S.RECOVER, "blip": "-", "lost": "-", "commit-failed": "-", "ready": "-",
        "ready-journal": "-", "replayed": "-", "drained": "-", "undrained": "-",
    },
    S.MAINTENANCE: {
        "nospace": "-", "session-lost": S.RECOVER,
        "ok": "-", "blip": "-", "lost": "-", "commit-failed": "-", "ready": "-",
        "ready-journal": "-", "replayed": "-", "drained": "-", "undrained": S.NORMAL,
    },
}  # fmt: skip

PAIRS = [(state, name) for state in SPOKE_STATES for name in OBSERVATIONS]


def machine_in(state: State, now: float = 100.0) -> Failover:
    m = Failover(P, now=now)
    m.state = state
    return m


def test_the_expected_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(SPOKE_STATES)
    assert all(set(row) == set(OBSERVATIONS) for row in EXPECTED.values())


@pytest.mark.parametrize(("state", "obs"), PAIRS, ids=[f"{s.value}-{o}" for s, o in PAIRS])
def test_every_state_and_observation(state: State, obs: str) -> None:
    m = machine_in(state)
    before_reason = m.reason
    t = m.observe(OBSERVATIONS[obs], now=101.0)
    expected = EXPECTED[state][obs]
    if expected == "-":
        assert t is None
        assert m.state is state and m.reason == before_reason
    else:
        assert t is not None
        assert (t.source, t.target) == (state, expected)
        assert m.state is expected and m.reason == t.reason and t.reason


@pytest.mark.parametrize(
    ("state", "answers", "journal", "cap"),
    [
        (S.STARTUP, False, False, None),
        (S.NORMAL, True, False, None),
        (S.COMMUNICATION_INTERRUPTED, True, True, 60),
        (S.RECOVER, True, True, 60),
        (S.RESOLUTION_INTERRUPTED, True, True, 60),
        (S.MAINTENANCE, False, False, None),
    ],
)
def test_what_each_state_allows(
    state: State, answers: bool, journal: bool, cap: int | None
) -> None:
    m = machine_in(state)
    assert m.answers_at_all is answers
    assert m.must_journal is journal
    assert m.lease_cap == cap


def test_new_allocations_stop_max_interrupted_after_the_last_keepalive() -> None:
    m = Failover(P, now=0.0)
    m.observe(Ready(), now=0.0)
    m.observe(EtcdOk(last_keepalive=10.0), now=10.0)
    assert m.may_allocate_new(10.0)
    t = m.observe(EtcdFailing(since_last_ok=2.1), now=12.1)
    assert t is not None and t.target is S.COMMUNICATION_INTERRUPTED
    assert "2.1 s" in t.reason
    assert m.may_allocate_new(39.9)
    assert not m.may_allocate_new(40.0)
    # etcd answers a probe while the session is lost: the keep-alive clock does not move
    m.observe(EtcdOk(last_keepalive=10.0, at=41.0), now=41.0)
    assert m.state is S.RECOVER and not m.may_allocate_new(41.0)
    # a new session's keep-alive lets allocations resume
    m.observe(EtcdOk(last_keepalive=42.0), now=42.0)
    assert m.may_allocate_new(42.5)


def test_an_answer_older_than_the_failure_is_no_evidence() -> None:
    """A commit fails at 11 while the last keep-alive (sent at 10) is still fresh: that
    keep-alive does not end the interruption the commit began (no RECOVER <-> RESOLUTION-
    INTERRUPTED flapping while etcd is down and the keep-alive clock has not run out yet)."""
    m = Failover(P, now=0.0)
    m.observe(Ready(), now=0.0)
    m.observe(EtcdOk(last_keepalive=10.0), now=10.0)
    t = m.observe(EtcdFailing(since_last_ok=1.0, cause="commit"), now=11.0)
    assert t is not None and t.target is S.COMMUNICATION_INTERRUPTED
    assert m.observe(EtcdOk(last_keepalive=10.0), now=11.5) is None
    assert m.state in (S.COMMUNICATION_INTERRUPTED,)
    # a keep-alive that went out after the failure and was answered is evidence
    t = m.observe(EtcdOk(last_keepalive=11.2), now=11.6)
    assert t is not None and t.target is S.RECOVER
    # and from RECOVER, a failing replay, then the same stale answer: still no flapping
    t = m.observe(EtcdFailing(since_last_ok=0.5, cause="commit"), now=11.7)
    assert t is not None and t.target is S.RESOLUTION_INTERRUPTED
    assert m.observe(EtcdOk(last_keepalive=11.2), now=11.8) is None
    assert m.state.value == "RESOLUTION-INTERRUPTED"


def test_a_full_interruption_round_trip_with_reasons() -> None:
    m = Failover(P, now=0.0)
    reasons = []
    steps: list[tuple[Observation, float]] = [
        (Ready(), 0.0),
        (EtcdFailing(3.0), 5.0),
        (EtcdOk(5.5), 15.0),
        (EtcdFailing(0.1, cause="commit"), 15.5),
        (EtcdOk(16.0), 17.0),
        (JournalReplayed(), 18.0),
    ]
    for obs, now in steps:
        t = m.observe(obs, now)
        assert t is not None
        reasons.append((t.target, t.reason))
    assert [r[0] for r in reasons] == [
        S.NORMAL,
        S.COMMUNICATION_INTERRUPTED,
        S.RECOVER,
        S.RESOLUTION_INTERRUPTED,
        S.RECOVER,
        S.NORMAL,
    ]
    assert reasons[2][1] == "etcd answering again after 10.0 s"
    assert m.interrupted_since is None


@given(st.lists(st.sampled_from(sorted(OBSERVATIONS)), max_size=40))
def test_policy_is_consistent_in_every_reachable_state(names: list[str]) -> None:
    m = Failover(P, now=0.0)
    for i, name in enumerate(names):
        m.observe(OBSERVATIONS[name], now=float(i))
        assert m.must_journal == (m.lease_cap is not None)
        assert not m.must_journal or m.answers_at_all
        if not m.answers_at_all:
            assert not m.may_allocate_new(float(i))


def test_params_are_validated() -> None:
    with pytest.raises(ValueError):
        FailoverParams(interrupted_after=0)
    with pytest.raises(ValueError):
        FailoverParams(mclt=0)
