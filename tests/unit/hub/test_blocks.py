import itertools
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubspoke.blocks import block_size_for, cut_blocks
from hubspoke.model import Pool, Scope


def scope_with(first: int, size: int) -> Scope:
    base = int(IPv4Address("10.0.0.0"))
    return Scope(
        name="s",
        subnet=IPv4Network("10.0.0.0/8"),
        pools=(Pool(IPv4Address(base + first), IPv4Address(base + first + size - 1)),),
    )


@pytest.mark.parametrize(
    ("pool_size", "expected"),
    [(1024, 64), (256, 64), (255, 63), (100, 25), (3, 1), (1, 1)],
)
def test_block_size(pool_size: int, expected: int) -> None:
    assert block_size_for(pool_size) == expected


@given(st.integers(1, 5000), st.integers(1, 70000))
def test_blocks_cover_the_pool_exactly_once(first: int, size: int) -> None:
    scope = scope_with(first, size)
    blocks = cut_blocks(scope)
    pool = scope.pools[0]
    assert blocks[0].first == pool.first
    assert blocks[-1].last == pool.last
    for a, b in itertools.pairwise(blocks):
        assert int(a.last) + 1 == int(b.first)
    assert sum(int(b.last) - int(b.first) + 1 for b in blocks) == size
    sizes = {int(b.last) - int(b.first) + 1 for b in blocks}
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) <= block_size_for(size)
