"""Unit tests for bench.perfdhcp (output parsing, command lines) and bench.measure verdicts."""

from __future__ import annotations

import pytest

from bench.measure import SearchResult, StepResult, StopReason, Verdict, limit_of, verdict_of
from bench.perfdhcp import LoadSpec, PerfdhcpOutputError, PerfdhcpReport, parse_report

# Shortened real perfdhcp 2.2 output (-x et), with two exchanges' timestamps.
SAMPLE = """\
Running: perfdhcp -4 -l 10.64.0.2 -r 1000 -p 3 -R 16777216 -x et 10.64.0.10
Scenario: basic.
Multi-thread mode enabled.
reached test-period.
reached test-period.
***Rate statistics***
Rate: 856.78 4-way exchanges/second, expected rate: 1000

***Malformed Packets***
Malformed packets: 0
***Statistics for: DISCOVER-OFFER***
sent packets: 2999
received packets: 2998
drops: 1
drops ratio: 0.0333 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.104 ms
avg delay: 0.150 ms
max delay: 2.233 ms
std deviation: 0.067 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 2998
received packets: 2990
drops: 8
drops ratio: 0.267 %
orphans: 2
rejected leases: 0
non unique addresses: 0

min delay: 0.128 ms
avg delay: 0.162 ms
max delay: 2.746 ms
std deviation: 0.064 ms
collected packets: 0

***Timestamps for packets: DISCOVER-OFFER***
sent / received: 000000.000134 / 000000.000975
sent / received: 000001.999900 / 000002.000150

***Timestamps for packets: REQUEST-ACK***
sent / received: 000000.001052 / 000000.001444
sent / received: 000002.000300 / 000002.000800
"""

NO_REPLIES = """\
Reached maximum drops number.
***Statistics for: DISCOVER-OFFER***
sent packets: 20
received packets: 0
drops: 20
drops ratio: 100 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: inf ms
avg delay: min delay: n/a
avg delay: n/a
max delay: n/a
***Statistics for: REQUEST-ACK***
sent packets: 0
received packets: 0
drops: 0
drops ratio: -nan %
"""


def test_parse_counters_and_delays() -> None:
    report = parse_report(SAMPLE)
    assert report.discover_offer.sent == 2999
    assert report.discover_offer.received == 2998
    assert report.request_ack.received == 2990
    assert report.request_ack.orphans == 2
    assert report.request_ack.avg_ms == pytest.approx(0.162)
    assert report.started == 2999
    assert report.completed == 2990
    assert report.lost == 9
    assert report.exit_reasons == ("reached test-period",)
    assert not report.hit_drop_limit


def test_parse_timestamps_into_latencies_even_across_a_second() -> None:
    report = parse_report(SAMPLE)
    assert report.discover_offer_ms == pytest.approx((0.841, 0.250))
    assert report.request_ack_ms == pytest.approx((0.392, 0.500))


def test_parse_run_without_replies() -> None:
    report = parse_report(NO_REPLIES)
    assert report.hit_drop_limit
    assert report.discover_offer.min_ms is None
    assert report.completed == 0
    assert report.loss_ratio == 1.0


@pytest.mark.parametrize(
    "text", ["", "Running: perfdhcp\n", "***Statistics for: DISCOVER-OFFER***\n"]
)
def test_parse_refuses_incomplete_output(text: str) -> None:
    with pytest.raises(PerfdhcpOutputError):
        parse_report(text)


def test_argv_bounds_the_run() -> None:
    spec = LoadSpec(rate=2000, seconds=3, local_address="10.64.0.2", server_address="10.64.0.10")
    argv = spec.argv()
    assert argv[0] == "perfdhcp"
    assert argv[argv.index("-r") + 1] == "2000"
    assert argv[argv.index("-p") + 1] == "3"
    assert argv[argv.index("-D") + 1] == "1500"  # absolute: a quarter of 6,000
    assert argv[argv.index("-l") + 1] == "10.64.0.2"
    assert argv[-1] == "10.64.0.10"
    assert "et" not in argv
    assert "et" in LoadSpec(1, 1, "a", "b", timestamps=True).argv()


@pytest.mark.parametrize(("rate", "seconds"), [(0, 1), (1, 0), (-5, 3)])
def test_spec_refuses_unbounded_or_empty_runs(rate: int, seconds: int) -> None:
    with pytest.raises(ValueError):
        LoadSpec(rate, seconds, "a", "b")


def _report(started: int, completed: int, reasons: tuple[str, ...] = ()) -> PerfdhcpReport:
    text = SAMPLE.replace("sent packets: 2999", f"sent packets: {started}").replace(
        "received packets: 2990", f"received packets: {completed}"
    )
    report = parse_report(text)
    return PerfdhcpReport(report.discover_offer, report.request_ack, reasons)


SPEC = LoadSpec(rate=1000, seconds=3, local_address="a", server_address="b")


@pytest.mark.parametrize(
    ("started", "completed", "reasons", "verdict"),
    [
        (3000, 3000, (), Verdict.PASS),
        (3000, 2971, (), Verdict.PASS),  # 0.97% lost
        (3000, 2970, (), Verdict.DROPS),  # 1% lost
        (3000, 2999, ("Reached maximum drops number",), Verdict.DROPS),
        (2000, 2000, (), Verdict.GENERATOR_SHORT),
        (0, 0, (), Verdict.DROPS),
    ],
)
def test_verdicts(started: int, completed: int, reasons: tuple[str, ...], verdict: Verdict) -> None:
    assert verdict_of(SPEC, _report(started, completed, reasons)) is verdict


def _step(started: int, completed: int, gen_cpu: float, server_cpu: float) -> StepResult:
    return StepResult(SPEC, _report(started, completed), 4.0, gen_cpu, server_cpu)


@pytest.mark.parametrize(
    ("failed", "stopped", "phrase"),
    [
        (None, StopReason.LADDER_END, "top of the rate ladder"),
        (_step(3000, 2000, 3.0, 4.0), StopReason.FAILED_STEP, "machine CPU"),
        (_step(3000, 2000, 1.0, 1.0), StopReason.FAILED_STEP, "server (CPU to spare)"),
        (_step(1000, 1000, 4.0, 1.0), StopReason.FAILED_STEP, "load generator"),
    ],
)
def test_limit_names_the_bottleneck(
    failed: StepResult | None, stopped: StopReason, phrase: str
) -> None:
    search = SearchResult(best=None, failed=failed, stopped=stopped, steps=())
    assert phrase in limit_of(search, cores=2)
