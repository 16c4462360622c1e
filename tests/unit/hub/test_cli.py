"""The CLI's pure parts: table rendering, argument handling, scope files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.cli import main as cli
from hub.cli import render as fmt


def test_table_aligns_columns() -> None:
    text = fmt.table(["A", "LONGER"], [["xxxx", 1], ["y", None]])
    assert text.splitlines() == ["A     LONGER", "xxxx  1", "y"]


@pytest.mark.parametrize(
    ("value", "shown"), [(-1, "-"), (-1.0, "-"), (None, "-"), (0.0, "0.0s"), (3.26, "3.3s")]
)
def test_age(value: object, shown: str) -> None:
    assert fmt.age(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"), [(0, "-"), (None, "-"), (1_700_003_600.0, "2023-11-14 23:13:20Z")]
)
def test_timestamp(value: object, shown: str) -> None:
    assert fmt.timestamp(value) == shown


def spoke(node: str, **extra: Any) -> dict[str, Any]:
    return {"node": node, "state": "NORMAL", "live": True, "bucket_count": 64, **extra}


def test_status_has_one_column_per_scope() -> None:
    state = {
        "hub_node": "h",
        "hub_address": "10.0.0.1:7500",
        "epoch": 7,
        "buckets_total": 256,
        "buckets_unassigned": 128,
        "spokes": [
            spoke(
                "a",
                utilization=[{"scope": "lan", "bound": 1, "free": 2}],
                report_age_s=1.0,
                cpu=0.42,
            ),
            spoke("b", utilization=[{"scope": "wan", "bound": 3, "free": 4}], report_age_s=-1),
        ],
        "blocks": [{"owner": "a"}, {"owner": ""}, {"owner": "b", "handover_to": "a"}],
    }
    lines = fmt.status_text(state).splitlines()
    assert lines[0] == "hub:     h at 10.0.0.1:7500 (epoch 7)"
    assert lines[1] == "buckets: 256 (128 unassigned)"
    assert lines[2] == "blocks:  3 (1 in reserve, 1 handing over)"
    assert lines[3] == ""
    assert lines[4].split()[-6:] == ["BOUND/FREE", "wan", "BOUND/FREE", "CPU", "REPORT", "AGE"]
    assert lines[5].split()[-4:] == ["1/2", "-", "42%", "1.0s"]
    assert lines[6].split()[-4:] == ["-", "3/4", "-", "-"]


def test_status_without_spokes() -> None:
    assert fmt.status_text({"epoch": 1}).splitlines()[-1] == "no spokes"


def parse(*args: str) -> Any:
    return cli.parser().parse_args(list(args))


def test_target_reads_hubs_token_and_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("HUBSPOKE_TOKEN", "from-env")
    t = cli.target_of(parse("--hub", " a:1 , b:2 ,", "--ca", str(ca), "status"))
    assert t.hubs == ("a:1", "b:2")
    assert t.token == "from-env"
    assert t.tls is not None and t.tls.ca_file == ca
    assert cli.target_of(parse("--hub", "a:1", "--token", "flag", "status")).token == "flag"


def test_plaintext_without_tls_options() -> None:
    assert cli.target_of(parse("--hub", "a:1", "status")).tls is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--hub", " , ", "status"), "--hub"),
        (("--cert", "c.pem", "status"), "--cert and --key"),
        (("--timeout", "0", "status"), "--timeout"),
        (("--ca", "/nonexistent/ca.pem", "status"), "no such file"),
    ],
)
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(cli.UsageError, match=message):
        cli.target_of(parse(*args))


def test_argparse_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as caught:
        parse("leases", "--ip", "1.2.3.4", "--mac", "aa")
    assert caught.value.code == 2


def test_scope_file_yaml_or_json(tmp_path: Path) -> None:
    y = tmp_path / "s.yaml"
    y.write_text("name: lan\nsubnet: 10.0.0.0/24\npools: [10.0.0.10-10.0.0.20]\n")
    assert cli.read_scope_file(str(y)) == (
        '{"name": "lan", "subnet": "10.0.0.0/24", "pools": ["10.0.0.10-10.0.0.20"]}'
    )
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n")
    with pytest.raises(cli.UsageError, match="a scope is a mapping"):
        cli.read_scope_file(str(bad))
    with pytest.raises(cli.UsageError, match=r"missing\.yaml"):
        cli.read_scope_file(str(tmp_path / "missing.yaml"))
