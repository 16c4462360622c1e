"""Text rendering for the `hubspoke` CLI: aligned tables from the API's answers as plain dicts
(protobuf's JSON mapping with proto field names, the same dicts `--json` prints). Pure; no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

Row = Sequence[object]


def table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    """Columns left-aligned and separated by two spaces; trailing spaces stripped."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def yes_no(value: object) -> str:
    return "yes" if value else "no"


def age(seconds: object) -> str:
    """A report age: "-" when none (-1), else seconds with one decimal."""
    if not isinstance(seconds, int | float) or seconds < 0:
        return "-"
    return f"{seconds:.1f}s"


def timestamp(seconds: object) -> str:
    if not isinstance(seconds, int | float) or seconds <= 0:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _scopes_of(spokes: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({u["scope"] for s in spokes for u in s.get("utilization", ())})


def spoke_rows(spokes: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[object]]]:
    """The spokes table of `status`: one bound/free column per scope."""
    scopes = _scopes_of(spokes)
    headers = ["NODE", "STATE", "LIVE", "DRAINING", "BUCKETS", "BLOCKS"]
    headers += [f"{s} BOUND/FREE" for s in scopes] + ["CPU", "REPORT AGE"]
    rows: list[list[object]] = []
    for s in spokes:
        per_scope = {u["scope"]: u for u in s.get("utilization", ())}
        row: list[object] = [
            s["node"],
            s.get("state") or "-",
            yes_no(s.get("live")),
            yes_no(s.get("draining")),
            s.get("bucket_count", 0),
            len(s.get("blocks", ())),
        ]
        for scope in scopes:
            u = per_scope.get(scope)
            row.append(f"{u.get('bound', 0)}/{u.get('free', 0)}" if u else "-")
        row.append(cpu(s.get("cpu", -1)))
        row.append(age(s.get("report_age_s", -1)))
        rows.append(row)
    return headers, rows


def cpu(share: object) -> str:
    """A process's CPU share as a percentage of one core ("-" when no report has told)."""
    if not isinstance(share, int | float) or share < 0:
        return "-"
    return f"{share * 100:.0f}%"


def status_text(state: Mapping[str, Any]) -> str:
    blocks = state.get("blocks", ())
    reserve = sum(1 for b in blocks if not b.get("owner"))
    moving = sum(1 for b in blocks if "handover_to" in b)
    lines = [
        f"hub:     {state.get('hub_node') or '-'} at {state.get('hub_address') or '-'}"
        f" (epoch {state.get('epoch', 0)})",
        f"buckets: {state.get('buckets_total', 0)} ({state.get('buckets_unassigned', 0)}"
        " unassigned)",
        f"blocks:  {len(blocks)} ({reserve} in reserve, {moving} handing over)",
        "",
    ]
    spokes = state.get("spokes", ())
    if not spokes:
        return "\n".join([*lines, "no spokes"])
    headers, rows = spoke_rows(spokes)
    return "\n".join([*lines, table(headers, rows)])


def spokes_text(state: Mapping[str, Any]) -> str:
    rows = [
        [
            s["node"],
            s.get("state") or "-",
            s.get("state_reason") or "-",
            yes_no(s.get("live")),
            yes_no(s.get("draining")),
            s.get("bucket_count", 0),
            s.get("grpc_address") or "-",
            age(s.get("report_age_s", -1)),
            ",".join(s.get("blocks", ())) or "-",
        ]
        for s in state.get("spokes", ())
    ]
    headers = ["NODE", "STATE", "REASON", "LIVE", "DRAINING", "BUCKETS", "GRPC", "REPORT AGE"]
    return table([*headers, "BLOCKS"], rows)


def scopes_text(docs: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            d.get("name", "?"),
            d.get("subnet", "-"),
            ",".join(str(p) for p in d.get("pools", ())) or "-",
            d.get("lease_time", "-"),
        ]
        for d in docs
    ]
    return table(["NAME", "SUBNET", "POOLS", "LEASE TIME"], rows)


def scope_text(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)


def leases_text(leases: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            x.get("scope", ""),
            x.get("ip", ""),
            x.get("state", ""),
            x.get("hw_address") or "-",
            x.get("client_id") or "-",
            x.get("hostname") or "-",
            timestamp(x.get("expires", 0)),
            x.get("node") or "-",
        ]
        for x in leases
    ]
    headers = ["SCOPE", "IP", "STATE", "HW ADDRESS", "CLIENT ID", "HOSTNAME", "EXPIRES", "NODE"]
    return table(headers, rows)
