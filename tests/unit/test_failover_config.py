"""The spoke config's `failover` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spoke.config import ConfigError, FailoverConfig, parse_config


def cfg(**failover: Any) -> dict[str, Any]:
    return {"node": "s1", "dhcp": {"interfaces": ["eth0"]}, "failover": failover}


def test_defaults() -> None:
    f = parse_config({"node": "s1", "dhcp": {"interfaces": ["eth0"]}}).failover
    assert f == FailoverConfig(2.0, 30.0, 60, None)
    assert f.journal_path("s1") == Path("/var/lib/hubspoke/s1.journal")


def test_values() -> None:
    f = parse_config(
        cfg(interrupted_after=1.5, max_interrupted=10, mclt=30, journal="/tmp/j/s1.journal")
    ).failover
    assert (f.interrupted_after, f.max_interrupted, f.mclt) == (1.5, 10.0, 30)
    assert f.journal_path("s1") == Path("/tmp/j/s1.journal")


@pytest.mark.parametrize(
    ("field", "value"),
    [("mclt", 5), ("interrupted_after", 0), ("max_interrupted", -1), ("journal", "/var/"),
     ("bogus", 1)],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(cfg(**{field: value}))
    assert "failover" in str(e.value)
