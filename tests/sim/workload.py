"""Owns a seeded etcd workload under random faults, with the invariants checked at its end.

Not yet the cluster (spokes and hub come later): several client processes, each with the real
`EtcdClient`, a `Session` (opened again when lost), a `PrefixMirror`, a compare-and-swap counter
and a campaign for leadership whose writes are fenced by the epoch, while `random_schedule`
faults hit etcd. Invariants:
- the counter ends between the increments acknowledged and those plus the ones of unknown
  outcome (nothing acknowledged is lost, nothing is applied twice);
- fenced writes land in epoch order (a deposed leader never writes after its successor);
- after the faults end, every mirror equals etcd's keys under its prefix.

    report = run_workload(seed)      # on a fresh virtual loop; raises InvariantBroken
    python -m tests.sim.workload --seeds 0-199    # re-execs under PYTHONHASHSEED=0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import random
import sys
from dataclasses import dataclass, field

from hubspoke.etcd import (
    Compare,
    Election,
    EtcdClient,
    EtcdConfig,
    EtcdError,
    EtcdUncertain,
    Leadership,
    Op,
    Session,
)
from hubspoke.etcd.mirror import PrefixMirror
from tests.sim.etcd import SimEtcd
from tests.sim.faults import random_schedule
from tests.sim.loop import run

PREFIX = b"/w/"
COUNTER = PREFIX + b"counter"
FENCED = PREFIX + b"fenced"
ELECTION = b"/election"


class InvariantBroken(AssertionError):
    """The workload saw etcd (or the client) break a promise."""


@dataclass(slots=True)
class Tally:
    acked: int = 0
    uncertain: int = 0
    fenced: list[tuple[int, int]] = field(default_factory=list)  # (revision, epoch) written
    elections: int = 0
    sessions: int = 0


@dataclass(frozen=True, slots=True)
class Report:
    seed: int
    faults: int
    revision: int
    counter: int
    acked: int
    uncertain: int
    elections: int
    sessions: int
    digest: str  # of etcd's trace: equal digests, equal runs


class Node:
    """One client process: session, mirror, a counter written from the mirror, a campaign."""

    def __init__(
        self, sim: SimEtcd, name: str, rng: random.Random, tally: Tally, stop: asyncio.Event
    ) -> None:
        config = EtcdConfig(endpoints=("sim:2379",), request_timeout=1.0)
        self.client: EtcdClient = sim.client(name, config)
        self.name = name
        self.rng = rng
        self.tally = tally
        self.mirror = PrefixMirror(self.client, PREFIX)
        self.session: Session | None = None
        self.stop = stop  # set: the counter ends after the write it has in flight

    async def live_session(self) -> Session:
        while self.session is None or not self.session.is_alive:
            if self.session is not None:
                await self.session.abandon()
                self.session = None
            try:
                self.session = await Session.open(self.client, ttl=3)
                self.tally.sessions += 1
            except EtcdError:
                await asyncio.sleep(0.5)
        return self.session

    async def count(self) -> None:
        while not self.stop.is_set():
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))
            kv = self.mirror.items.get(COUNTER)  # the replica: may be stale, the compare decides
            value = int(kv.value) if kv else 0
            guard = Compare.mod_revision(COUNTER, "=", kv.mod_revision if kv else 0)
            try:
                result = await self.client.txn([guard], [Op.put(COUNTER, b"%d" % (value + 1))])
            except EtcdUncertain:
                self.tally.uncertain += 1
                continue
            except EtcdError:
                continue
            if result.succeeded:
                self.tally.acked += 1

    async def lead(self) -> None:
        election = Election(self.client, ELECTION)
        while True:
            session = await self.live_session()
            try:
                won = await election.campaign(session.lease_id, self.name.encode())
            except EtcdError:
                await asyncio.sleep(0.2)
                continue
            self.tally.elections += 1
            await self._write_fenced(session, won)
            with contextlib.suppress(EtcdError):
                await election.resign(won)

    async def _write_fenced(self, session: Session, won: Leadership) -> None:
        for _ in range(self.rng.randint(1, 5)):
            if not session.is_alive:
                return
            fence = [Compare.create_revision(won.key, "=", won.epoch)]
            try:
                result = await self.client.txn(fence, [Op.put(FENCED, b"%d" % won.epoch)])
            except EtcdError:
                return
            if not result.succeeded:
                return
            self.tally.fenced.append((result.revision, won.epoch))
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))

    async def follow(self) -> None:
        while True:
            try:
                await self.mirror.load()
                await self.mirror.follow()
            except EtcdError:
                await asyncio.sleep(0.2)


async def workload(
    seed: int, *, nodes: int = 3, horizon: float = 60.0, settle: float = 30.0
) -> Report:
    """Run the workload for `horizon` virtual seconds of faults, then `settle`, then check."""
    sim = SimEtcd(seed=seed)
    rng = random.Random(f"workload-{seed}")
    names = [f"n{i}" for i in range(nodes)]
    schedule = random_schedule(rng, names, horizon=horizon, max_duration=8.0)
    sim.schedule(schedule)
    tally = Tally()
    stop = asyncio.Event()
    members = [Node(sim, name, random.Random(f"{name}-{seed}"), tally, stop) for name in names]
    counters = [asyncio.create_task(m.count(), name=f"{m.name}-count") for m in members]
    leaders = [asyncio.create_task(m.lead(), name=f"{m.name}-lead") for m in members]
    followers = [asyncio.create_task(m.follow(), name=f"{m.name}-follow") for m in members]
    everything = [*counters, *leaders, *followers]
    await asyncio.sleep(horizon + 8.0 + settle)  # every fault has ended and things settled
    broken = [t for t in everything if t.done()]
    stop.set()  # a counter cancelled mid-write would leave an outcome nobody counted
    await asyncio.gather(*counters, return_exceptions=True)
    for task in leaders:
        task.cancel()
    await asyncio.gather(*leaders, return_exceptions=True)
    await asyncio.sleep(2.0)  # what was in flight lands; the mirrors catch up
    for task in broken:
        if not task.cancelled() and task.exception() is not None:
            raise InvariantBroken(f"{task.get_name()} died") from task.exception()
    counter_kv = sim.get(COUNTER)
    counter = int(counter_kv.value) if counter_kv else 0
    if not tally.acked <= counter <= tally.acked + tally.uncertain:
        raise InvariantBroken(
            f"seed {seed}: counter {counter}, acknowledged {tally.acked}, unknown {tally.uncertain}"
        )
    epochs = [epoch for _, epoch in sorted(tally.fenced)]
    if epochs != sorted(epochs):
        raise InvariantBroken(f"seed {seed}: fenced writes out of epoch order: {tally.fenced}")
    truth = {kv.key: kv for kv in sim.under(PREFIX)}
    for member in members:
        mirrored = {k: (kv.value, kv.mod_revision) for k, kv in member.mirror.items.items()}
        if mirrored != {k: (kv.value, kv.mod_revision) for k, kv in truth.items()}:
            raise InvariantBroken(f"seed {seed}: {member.name}'s mirror differs from etcd")
    for task in followers:
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    for member in members:
        if member.session is not None:
            await member.session.abandon()
        await member.client.close()
    digest = hashlib.sha256("\n".join(sim.trace).encode()).hexdigest()[:16]
    return Report(
        seed=seed,
        faults=len(schedule),
        revision=sim.revision,
        counter=counter,
        acked=tally.acked,
        uncertain=tally.uncertain,
        elections=tally.elections,
        sessions=tally.sessions,
        digest=digest,
    )


def run_workload(seed: int, *, horizon: float = 60.0, settle: float = 30.0) -> Report:
    """`workload(seed)` on a fresh virtual loop."""
    return run(workload(seed, horizon=horizon, settle=settle), limit=horizon + settle + 600.0)


def _seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.sim.workload --seeds 0-99 [--horizon 60]`, under PYTHONHASHSEED=0."""
    parser = argparse.ArgumentParser(prog="python -m tests.sim.workload")
    parser.add_argument("--seeds", default="0-9", help="a range, e.g. 0-999")
    parser.add_argument("--horizon", type=float, default=60.0, help="virtual seconds of faults")
    parser.add_argument("--verbose", action="store_true", help="log what the clients do")
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        argv0 = [sys.executable, "-m", "tests.sim.workload", *sys.argv[1:]]
        os.execve(sys.executable, argv0, env)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    failed = []
    for seed in _seeds(args.seeds):
        try:
            r = run_workload(seed, horizon=args.horizon)
        except InvariantBroken as err:
            failed.append(seed)
            print(f"seed {seed} FAILED {err} ({err.__cause__!r})")
            continue
        print(
            f"seed {seed}: {r.digest} faults={r.faults} revision={r.revision} "
            f"counter={r.counter} acked={r.acked} unknown={r.uncertain} "
            f"elections={r.elections} sessions={r.sessions}"
        )
    if failed:
        print(f"{len(failed)} seeds FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["InvariantBroken", "Report", "main", "run_workload", "workload"]
