"""perfdhcp (Kea 2.2) command lines and output parsing: pure; no I/O.

perfdhcp in DHCPv4 always acts as a relay: giaddr is its own address (`-l`) and replies come
back to port 67 there, so every server's subnet must contain the client's address. With
`-x t` it prints, per successful exchange, the sent and received timestamps of each message
pair; latency percentiles are computed from those (REQUEST->ACK and DISCOVER->OFFER).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PERFDHCP = "perfdhcp"
# Clients drawn at random from 2**24 MAC addresses: nearly every exchange is a fresh client.
DEFAULT_CLIENTS = 1 << 24
EXIT_WAIT_US = 300_000
DROP_TIME_S = 1.0
DROP_LIMIT_MIN = 100
DROP_LIMIT_DIVISOR = 4


class PerfdhcpOutputError(ValueError):
    """perfdhcp printed something this parser does not understand."""


@dataclass(frozen=True)
class LoadSpec:
    """One bounded perfdhcp run: `rate` exchanges/s for `seconds` whole seconds."""

    rate: int
    seconds: int
    local_address: str
    server_address: str
    clients: int = DEFAULT_CLIENTS
    timestamps: bool = False

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.seconds <= 0:
            raise ValueError("rate and seconds must be positive")

    @property
    def expected(self) -> int:
        """Exchanges perfdhcp should start in this run."""
        return self.rate * self.seconds

    @property
    def drop_limit(self) -> int:
        """Absolute drop count at which perfdhcp gives up: a quarter of the run (at least 100).

        A safety valve, not the verdict (which is the loss ratio at the end). perfdhcp 2.2
        counts as "drops" every exchange sent and not yet answered, so in-flight exchanges
        count too: a 1% limit ended every step whose latency passed 1% of the step (30 ms of a
        3 s step) although nothing was lost.
        """
        return max(DROP_LIMIT_MIN, self.expected // DROP_LIMIT_DIVISOR)

    def argv(self) -> list[str]:
        """The perfdhcp command line for this run."""
        argv = [
            PERFDHCP,
            "-4",
            "-l",
            self.local_address,
            "-r",
            str(self.rate),
            "-p",
            str(self.seconds),
            "-R",
            str(self.clients),
            "-D",
            str(self.drop_limit),
            "-d",
            str(DROP_TIME_S),
            "-W",
            str(EXIT_WAIT_US),
            "-x",
            "et" if self.timestamps else "e",
            self.server_address,
        ]
        return argv


@dataclass(frozen=True)
class ExchangeStats:
    """perfdhcp's counters and delays for one message pair (DISCOVER-OFFER or REQUEST-ACK)."""

    sent: int
    received: int
    drops: int
    orphans: int
    rejected: int
    min_ms: float | None
    avg_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class PerfdhcpReport:
    """Everything the benchmark reads from one perfdhcp run."""

    discover_offer: ExchangeStats
    request_ack: ExchangeStats
    exit_reasons: tuple[str, ...] = ()
    discover_offer_ms: tuple[float, ...] = field(default=(), repr=False)
    request_ack_ms: tuple[float, ...] = field(default=(), repr=False)

    @property
    def started(self) -> int:
        """Exchanges started (DISCOVERs sent)."""
        return self.discover_offer.sent

    @property
    def completed(self) -> int:
        """Exchanges that ended with an ACK."""
        return self.request_ack.received

    @property
    def lost(self) -> int:
        """Exchanges started that did not end with an ACK (no OFFER, no ACK, or too late)."""
        return max(0, self.started - self.completed)

    @property
    def loss_ratio(self) -> float:
        return self.lost / self.started if self.started else 1.0

    @property
    def hit_drop_limit(self) -> bool:
        return any("maximum drops" in reason.lower() for reason in self.exit_reasons)


_SECTION_RE = re.compile(r"^\*{3}(.+?)\*{3}\s*$")
_FIELD_RE = re.compile(r"^([a-z][a-z ]*?):\s*(.+?)\s*$")
_STAMP_RE = re.compile(r"^sent / received:\s*(\d+)\.(\d+)\s*/\s*(\d+)\.(\d+)\s*$")
_EXIT_HINTS = ("reached", "interrupted", "exit")


def _number(text: str) -> float | None:
    match = re.match(r"^(-?[0-9.]+(?:e[-+]?\d+)?)", text)
    return float(match.group(1)) if match else None


def _micros(seconds: str, fraction: str) -> int:
    return int(seconds) * 1_000_000 + int(fraction.ljust(6, "0")[:6])


def _stats(fields: dict[str, str], section: str) -> ExchangeStats:
    def count(name: str) -> int:
        try:
            return int(fields[name])
        except (KeyError, ValueError):
            raise PerfdhcpOutputError(f"{section}: no integer '{name}'") from None

    def delay(name: str) -> float | None:
        value = fields.get(name)
        return _number(value) if value is not None else None

    return ExchangeStats(
        sent=count("sent packets"),
        received=count("received packets"),
        drops=count("drops"),
        orphans=int(fields.get("orphans", "0")),
        rejected=int(fields.get("rejected leases", "0")),
        min_ms=delay("min delay"),
        avg_ms=delay("avg delay"),
        max_ms=delay("max delay"),
    )


def parse_report(text: str) -> PerfdhcpReport:
    """Parse perfdhcp's final report (with or without `-x e` and `-x t`)."""
    section = ""
    fields: dict[str, dict[str, str]] = {}
    stamps: dict[str, list[float]] = {}
    reasons: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        header = _SECTION_RE.match(line)
        if header:
            section = header.group(1).strip()
            continue
        stamp = _STAMP_RE.match(line)
        if stamp:
            sent = _micros(stamp.group(1), stamp.group(2))
            received = _micros(stamp.group(3), stamp.group(4))
            stamps.setdefault(section, []).append((received - sent) / 1000.0)
            continue
        if not section:
            is_reason = line.lower().startswith(_EXIT_HINTS) or "maximum drops" in line.lower()
            if is_reason and line.rstrip(".") not in reasons:
                reasons.append(line.rstrip("."))
            continue
        match = _FIELD_RE.match(line)
        if match:
            fields.setdefault(section, {})[match.group(1)] = match.group(2)
    do_key = "Statistics for: DISCOVER-OFFER"
    ra_key = "Statistics for: REQUEST-ACK"
    for key in (do_key, ra_key):
        if key not in fields:
            raise PerfdhcpOutputError(f"no '{key}' section in perfdhcp output")
    return PerfdhcpReport(
        discover_offer=_stats(fields[do_key], do_key),
        request_ack=_stats(fields[ra_key], ra_key),
        exit_reasons=tuple(reasons),
        discover_offer_ms=tuple(stamps.get("Timestamps for packets: DISCOVER-OFFER", ())),
        request_ack_ms=tuple(stamps.get("Timestamps for packets: REQUEST-ACK", ())),
    )
