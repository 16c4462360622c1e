"""Cutting a scope's pools into blocks. Pure; no I/O.

A block is a contiguous run of one pool. The default size is 64 addresses; a pool too small to
give at least `MIN_BLOCKS_PER_POOL` blocks of that size gets smaller blocks, so that several
spokes (and the hub's reserve) can still share it.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hubspoke.model import Block, Scope

DEFAULT_BLOCK_SIZE = 64
MIN_BLOCKS_PER_POOL = 4


def block_size_for(pool_size: int, configured: int = DEFAULT_BLOCK_SIZE) -> int:
    if configured < 1:
        raise ValueError("block size must be at least 1")
    if pool_size >= configured * MIN_BLOCKS_PER_POOL:
        return configured
    return max(1, pool_size // MIN_BLOCKS_PER_POOL)


def cut_blocks(scope: Scope, configured: int = DEFAULT_BLOCK_SIZE) -> tuple[Block, ...]:
    """Every block of every pool of `scope`, in address order.

    A pool is cut into `ceil(size / block size)` blocks of nearly equal sizes (they differ by
    at most one address), so no pool ends with a sliver of a block.
    """
    blocks: list[Block] = []
    for pool in sorted(scope.pools, key=lambda p: p.first):
        count = -(-pool.size // block_size_for(pool.size, configured))
        base, extra = divmod(pool.size, count)
        start = int(pool.first)
        for i in range(count):
            end = start + base + (1 if i < extra else 0) - 1
            blocks.append(Block(scope.name, IPv4Address(start), IPv4Address(end)))
            start = end + 1
    return tuple(blocks)


def block_in_scope(scope: Scope, block_id: str) -> Block | None:
    """The block a record's id (`<first>-<last>`) names, if it lies inside one pool of `scope`.

    Spokes read block ids this way rather than re-cutting the pools, so the hub's configured
    block size is the only one that matters.
    """
    first_s, sep, last_s = block_id.partition("-")
    if not sep:
        return None
    try:
        first, last = IPv4Address(first_s), IPv4Address(last_s)
    except ValueError:
        return None
    if first > last or not any(first in p and last in p for p in scope.pools):
        return None
    return Block(scope.name, first, last)
