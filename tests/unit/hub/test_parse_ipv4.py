"""`parse_ipv4` accepts and refuses exactly what `IPv4Address(text)` does."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubspoke.model import parse_ipv4


def same_as_stdlib(text: str) -> None:
    try:
        expected: IPv4Address | None = IPv4Address(text)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            parse_ipv4(text)
    else:
        assert parse_ipv4(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        " 1.2.3.4",
        "1.2.3.4\n",
        "0x1.2.3.4",
        "1..3.4",
        "",
        "1.2.3.-1",
        "+1.2.3.4",
        "1.2.3.4/32",
        "\u0661.2.3.4",
        "1.2.3.4\x00",
    ],
)
def test_examples(text: str) -> None:
    same_as_stdlib(text)


@given(st.text(alphabet="0123456789.x+- \u0661", max_size=18))
def test_any_text(text: str) -> None:
    same_as_stdlib(text)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_address_round_trips(n: int) -> None:
    ip = IPv4Address(n)
    assert parse_ipv4(str(ip)) == ip
