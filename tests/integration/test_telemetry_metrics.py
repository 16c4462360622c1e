"""Metrics end to end: the asyncio /metrics server on port 0, scraped over HTTP with urllib."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Mapping

import pytest

from hubspoke.observe.prometheus import MetricsServer
from spoke.metrics import Metrics


def _get(url: str, method: str = "GET", accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, method=method)
    if accept is not None:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


async def scrape(server: MetricsServer, path: str = "/metrics", **kw: str) -> tuple[int, str, str]:
    # urllib blocks: run it in a thread so the server on this loop can answer
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}{path}", **kw)


async def test_scrape_shows_every_series() -> None:
    m = Metrics()
    bindings = {("lan", "bound"): 12, ("lan", "declined"): 1}
    free: dict[str, int] = {"lan": 51}
    m.set_sources(lambda: bindings, lambda: free)
    m.packet_in("DISCOVER")
    m.packet_in("DISCOVER")
    m.packet_out("OFFER")
    m.drop("not-my-bucket")
    with m.commit():
        assert m.registry.get_sample_value("hubspoke_commits_inflight") == 1
    m.set_state("startup")
    m.set_state("normal")

    async with MetricsServer(m, "127.0.0.1", 0) as server:
        status, ctype, text = await scrape(server)
        assert status == 200 and ctype.startswith("text/plain")
        for line in (
            'hubspoke_dhcp_packets_total{direction="in",type="DISCOVER"} 2.0',
            'hubspoke_dhcp_packets_total{direction="out",type="OFFER"} 1.0',
            'hubspoke_dhcp_drops_total{reason="not-my-bucket"} 1.0',
            "hubspoke_etcd_commit_seconds_count 1.0",
            'hubspoke_etcd_commit_seconds_bucket{le="0.0005"}',
            'hubspoke_etcd_commit_seconds_bucket{le="2.0"} 1.0',
            "hubspoke_commits_inflight 0.0",
            'hubspoke_state{state="normal"} 1.0',
            'hubspoke_state{state="startup"} 0.0',
            'hubspoke_state{state="partner-down"} 0.0',
            'hubspoke_bindings{scope="lan",state="bound"} 12.0',
            'hubspoke_bindings{scope="lan",state="declined"} 1.0',
            'hubspoke_free_addresses{scope="lan"} 51.0',
        ):
            assert line in text, line

        # the gauges follow the runtime's data at the next scrape, with no update calls
        free["lan"] = 50
        bindings[("wan", "bound")] = 3
        _, _, text = await scrape(server)
        assert 'hubspoke_free_addresses{scope="lan"} 50.0' in text
        assert 'hubspoke_bindings{scope="wan",state="bound"} 3.0' in text


async def test_openmetrics_when_asked() -> None:
    m = Metrics()
    m.packet_in("REQUEST")
    async with MetricsServer(m, "127.0.0.1", 0) as server:
        status, ctype, text = await scrape(server, accept="application/openmetrics-text")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert 'hubspoke_dhcp_packets_total{direction="in",type="REQUEST"} 1.0' in text
    assert text.endswith("# EOF\n")


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [("/", "GET", 404), ("/other", "GET", 404), ("/metrics", "POST", 405)],
)
async def test_other_requests_are_refused(path: str, method: str, status: int) -> None:
    async with MetricsServer(Metrics(), "127.0.0.1", 0) as server:
        got, _, _ = await scrape(server, path, method=method)
    assert got == status


async def test_a_failing_source_does_not_break_the_scrape() -> None:
    def broken() -> Mapping[str, int]:
        raise RuntimeError("replica gone")

    m = Metrics()
    m.set_sources(None, broken)
    m.drop("bad-packet")
    async with MetricsServer(m, "127.0.0.1", 0) as server:
        status, _, text = await scrape(server)
    assert status == 200
    assert 'hubspoke_dhcp_drops_total{reason="bad-packet"} 1.0' in text
    assert "hubspoke_free_addresses{" not in text


async def test_registries_are_separate_and_the_server_stops() -> None:
    a, b = Metrics(), Metrics()
    a.packet_in("INFORM")
    server = MetricsServer(b, "127.0.0.1", 0)
    await server.start()
    port = server.port
    _, _, text = await scrape(server)
    assert "INFORM" not in text
    await server.stop()
    with pytest.raises(OSError):
        await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
