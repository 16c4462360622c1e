"""Binding table under random operations, checked against a brute-force model."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hubspoke.model import Binding, BindingState, Block, Versioned
from spoke.leases.table import BindingTable

S = "s"
BASE = int(IPv4Address("10.9.0.0"))
SIZE = 12
BLOCKS = (
    Block(S, IPv4Address(BASE), IPv4Address(BASE + 5)),
    Block(S, IPv4Address(BASE + 6), IPv4Address(BASE + SIZE - 1)),
)
DELAY = 5.0
ADDRS = [IPv4Address(BASE + i) for i in range(SIZE)]
clients = st.integers(0, 7).map(lambda n: bytes([1, n]))
addrs = st.sampled_from(ADDRS)


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.t = BindingTable(reuse_delay=DELAY)
        self.now = 0.0
        self.rev = 1
        self.owned = {BLOCKS[0]}
        self.reserved: set[IPv4Address] = set()
        self.bindings: dict[IPv4Address, Binding] = {}
        self.offers: dict[IPv4Address, tuple[bytes, float]] = {}
        self.t.set_blocks(S, {b: 1 for b in self.owned})

    # -- the model -------------------------------------------------------------------------
    def model_free(self, a: IPv4Address) -> bool:
        if a in self.reserved or not any(a in b for b in self.owned):
            return False
        offer = self.offers.get(a)
        if offer is not None and offer[1] > self.now:
            return False
        b = self.bindings.get(a)
        if b is None:
            return True
        end = b.expires if b.state is BindingState.DECLINED else b.expires + DELAY
        return end <= self.now

    def put(self, a: IPv4Address, b: Binding | None) -> None:
        self.rev += 1
        self.t.apply(S, a, b, Versioned(self.rev, self.rev))
        if b is None:
            self.bindings.pop(a, None)
        else:
            self.bindings[a] = b

    def holder(self, a: IPv4Address) -> bytes | None:
        """Who may use `a` now: an active binding's client or a live offer's client."""
        b = self.bindings.get(a)
        if b is not None and b.is_active(self.now):
            return b.client_key
        offer = self.offers.get(a)
        return offer[0] if offer is not None and offer[1] > self.now else None

    # -- rules -----------------------------------------------------------------------------
    @rule(key=clients, lease=st.sampled_from([3.0, 20.0, 100.0]), commit=st.booleans())
    def allocate(self, key: bytes, lease: float, commit: bool) -> None:
        got = self.t.pick_free(S, self.now)
        expected = {a for a in ADDRS if self.model_free(a)}
        if got is None:
            assert not expected
            return
        assert got in expected
        never = [a for a in expected if a not in self.bindings]
        if never:
            assert got == min(never)
        assert self.holder(got) is None
        prev = self.t.offer_for(S, key, self.now)
        if prev is not None:
            self.offers.pop(prev.ip, None)
        self.t.hold_offer(S, got, key, self.now + 10)
        self.offers[got] = (key, self.now + 10)
        if commit:
            self.t.forget_offer(S, key)
            self.offers.pop(got, None)
            b = Binding(S, got, BindingState.BOUND, key, key, self.now, self.now + lease, "n")
            self.put(got, b)

    @rule(a=addrs, state=st.sampled_from([BindingState.RELEASED, BindingState.EXPIRED]))
    def end(self, a: IPv4Address, state: BindingState) -> None:
        b = self.bindings.get(a)
        if b is not None and b.state is BindingState.BOUND:
            expires = min(b.expires, self.now)
            self.put(a, Binding(S, a, state, b.client_key, b.hw_address, b.start, expires, "n"))

    @rule(a=addrs, key=clients)
    def decline(self, a: IPv4Address, key: bytes) -> None:
        if self.holder(a) in (None, key):
            self.put(
                a, Binding(S, a, BindingState.DECLINED, key, key, self.now, self.now + 30, "n")
            )

    @rule(a=addrs)
    def delete(self, a: IPv4Address) -> None:
        self.put(a, None)

    @rule(key=clients)
    def forget(self, key: bytes) -> None:
        offer = self.t.offer_for(S, key, self.now)
        self.t.forget_offer(S, key)
        if offer is not None:
            self.offers.pop(offer.ip, None)

    @rule(dt=st.sampled_from([0.5, 3.0, 5.0, 10.0, 40.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.t.expire_offers(self.now)

    @rule(which=st.sets(st.sampled_from(BLOCKS)))
    def own(self, which: set[Block]) -> None:
        self.owned = which
        self.t.set_blocks(S, {b: 1 for b in which})

    @rule(which=st.sets(addrs, max_size=3))
    def reserve(self, which: set[IPv4Address]) -> None:
        self.reserved = which
        self.t.set_reserved(S, which)

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def free_count_matches_model(self) -> None:
        assert self.t.free_count(S, self.now) == sum(self.model_free(a) for a in ADDRS)

    @invariant()
    def is_free_matches_model(self) -> None:
        for a in ADDRS:
            assert self.t.is_free(S, a, self.now) == self.model_free(a)

    @invariant()
    def one_holder_per_address(self) -> None:
        holders: dict[bytes, set[IPv4Address]] = {}
        for a in ADDRS:
            h = self.holder(a)
            if h is not None:
                holders.setdefault(h, set()).add(a)
        live_offers = {o[0] for o in self.offers.values() if o[1] > self.now}
        for key in live_offers:
            offer = self.t.offer_for(S, key, self.now)
            assert offer is not None and self.offers[offer.ip][0] == key


TableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestTable = TableMachine.TestCase
